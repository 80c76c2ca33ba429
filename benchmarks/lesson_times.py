"""Execute each lesson in a fresh kernel and measure its wall time and peak memory.

    python benchmarks/lesson_times.py                 # all lessons, table only
    python benchmarks/lesson_times.py --write         # also save the executed notebooks in place
    python benchmarks/lesson_times.py lessons/01_magic_function.ipynb

The table is printed and written to book/_generated/lesson_times.md, which the
"How to run" page includes. Peak memory is the largest resident set size of the kernel
process, sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
import torch
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sdlearn.utils import atomic_write  # noqa: E402

TABLE = ROOT / "book" / "_generated" / "lesson_times.md"
BUDGET_S = 120


class PeakMemory(threading.Thread):
    """Sample a process tree's resident memory until stopped; keep the maximum."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            try:
                rss = self.process.memory_info().rss
                rss += sum(child.memory_info().rss for child in self.process.children(recursive=True))
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            time.sleep(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join()


def execute(path: Path, write: bool = False, timeout: int = 600) -> tuple[float, float]:
    """Run a notebook top to bottom in a fresh kernel; return (seconds, peak MiB)."""
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", MPLBACKEND="module://matplotlib_inline.backend_inline")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    with client.setup_kernel(env=env):
        pid = client.km.provisioner.process.pid
        monitor = PeakMemory(pid)
        monitor.start()
        try:
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
        finally:
            monitor.stop()
    seconds = time.perf_counter() - start
    if write:
        with atomic_write(path, "w") as handle:
            nbformat.write(nb, handle)
    return seconds, monitor.peak / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="lessons to run (default: all of lessons/)")
    parser.add_argument("--write", action="store_true", help="save the executed notebooks in place")
    parser.add_argument("--no-table", action="store_true", help="do not rewrite the table in book/_generated")
    parser.add_argument("--update", action="store_true",
                        help="with named lessons: replace their rows in the existing table, keep the others")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.notebooks] or sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
    rows = []
    for path in paths:
        seconds, peak = execute(path.resolve(), write=args.write)
        rows.append((path.stem, seconds, peak))
        print(f"{path.stem:<28} {seconds:7.1f} s {peak:8.0f} MiB", flush=True)
    if args.update and TABLE.exists():
        measured = {name for name, _, _ in rows}
        for line in TABLE.read_text().splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 4 and cells[0][:2].isdigit() and cells[0] not in measured:
                rows.append((cells[0], float(cells[1]), float(cells[2])))
        rows.sort()
    cpu = platform.processor() or platform.machine()
    lines = [
        f"| lesson | wall time (s) | peak memory (MiB) | within {BUDGET_S} s |",
        "| --- | ---: | ---: | :---: |",
    ]
    for name, seconds, peak in rows:
        lines.append(f"| {name} | {seconds:.0f} | {peak:.0f} | {'yes' if seconds <= BUDGET_S else 'NO'} |")
    lines.append("")
    lines.append(f"Measured on {os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, "
                 f"{torch.get_num_threads()} threads, each lesson in a fresh kernel.")
    table = "\n".join(lines) + "\n"
    print()
    print(table)
    if not args.no_table and (args.update or not args.notebooks):
        with atomic_write(TABLE, "w") as handle:
            handle.write(table)
        print(f"wrote {TABLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
