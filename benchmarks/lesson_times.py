"""Execute each lesson in a fresh kernel and measure its wall time and peak memory.

    python benchmarks/lesson_times.py                 # all lessons, table only
    python benchmarks/lesson_times.py --write         # also save the executed notebooks in place
    python benchmarks/lesson_times.py lessons/01_magic_function.ipynb
    python benchmarks/lesson_times.py --load 1        # with another process keeping a core busy

The table is printed and written to book/_generated/lesson_times.md, which the
"How to run" page includes; the file keeps one table per kind of machine measured. Peak memory
is the largest resident set size of the kernel process, sampled every 50 ms; the slowest cell
is compared with nbval's and the book build's limit of 600 s a cell. The kernels run under the
pinned CPU numerics of sdlearn/numerics.env (as for the tests and the book build), and the
table records the CPU model, its instruction sets and the kernels used, since a lesson's time
depends on them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import re
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sdlearn import numerics  # noqa: E402  (imports nothing heavy)

numerics.apply()   # before torch starts: this process and the kernels it launches share the settings

import nbformat  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from sdlearn.precision import choose_mixed_precision, cpu_flags  # noqa: E402
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


def execute(path: Path, write: bool = False, timeout: int = 600) -> tuple[float, float, float]:
    """Run a notebook top to bottom in a fresh kernel; return (seconds, peak MiB, slowest cell's seconds)."""
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", MPLBACKEND="module://matplotlib_inline.backend_inline")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    slowest = 0.0
    start = time.perf_counter()
    with client.setup_kernel(env=env):
        pid = client.km.provisioner.process.pid
        monitor = PeakMemory(pid)
        monitor.start()
        try:
            for index, cell in enumerate(nb.cells):
                cell_start = time.perf_counter()
                client.execute_cell(cell, index)
                slowest = max(slowest, time.perf_counter() - cell_start)
        finally:
            monitor.stop()
    seconds = time.perf_counter() - start
    if write:
        with atomic_write(path, "w") as handle:
            nbformat.write(nb, handle)
    return seconds, monitor.peak / 2**20, slowest


def _busy(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


class CompetingLoad:
    """`n` processes that keep one core each busy while the lessons run (ended at exit, or after 2 hours)."""

    def __init__(self, n: int):
        self.processes = [multiprocessing.Process(target=_busy, args=(time.time() + 7200,), daemon=True)
                          for _ in range(n)]

    def __enter__(self):
        for process in self.processes:
            process.start()
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            process.terminate()
            process.join()


def cpu_description() -> str:
    """The CPU model and the instruction sets that decide the lessons' speed."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    sets = [name for flag, name in [("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"),
                                    ("amx_bf16", "AMX")] if flag in flags]
    return f"{model} ({', '.join(sets) or 'no AVX2'})"


def read_sections(text: str) -> dict[str, str]:
    """The tables already in the file, one per machine: {machine: markdown}."""
    return dict(re.findall(r"<!-- machine: (.*?) -->\n(.*?)<!-- end -->\n", text, flags=re.DOTALL))


def rows_of(section: str) -> list[tuple]:
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[0][:2].isdigit():
            rows.append((cells[0], float(cells[1]), float(cells[2]), float(cells[3])))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="lessons to run (default: all of lessons/)")
    parser.add_argument("--write", action="store_true", help="save the executed notebooks in place")
    parser.add_argument("--no-table", action="store_true", help="do not rewrite the table in book/_generated")
    parser.add_argument("--update", action="store_true",
                        help="with named lessons: replace their rows in this machine's table, keep the others")
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="keep N cores busy with other processes meanwhile (a shared machine); "
                             "the table is then printed only")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.notebooks] or sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
    pinned = numerics.apply()
    precision = choose_mixed_precision("cpu")
    machine = (f"{cpu_description()}, {os.cpu_count()} cores; kernels {pinned['ATEN_CPU_CAPABILITY']}, "
               f"oneDNN up to {pinned['ONEDNN_MAX_CPU_ISA']}, MKL {pinned['MKL_CBWR']}, "
               f"{pinned['OMP_NUM_THREADS']} threads")
    rows = []
    with CompetingLoad(args.load):
        for path in paths:
            seconds, peak, slowest = execute(path.resolve(), write=args.write)
            rows.append((path.stem, seconds, peak, slowest))
            print(f"{path.stem:<28} {seconds:7.1f} s {peak:8.0f} MiB   slowest cell {slowest:6.1f} s", flush=True)
    sections = read_sections(TABLE.read_text()) if TABLE.exists() else {}
    if args.update and machine in sections:
        measured = {row[0] for row in rows}
        rows += [row for row in rows_of(sections[machine]) if row[0] not in measured]
        rows.sort()
    lines = [
        f"| lesson | wall time (s) | peak memory (MiB) | slowest cell (s) | within {BUDGET_S} s |",
        "| --- | ---: | ---: | ---: | :---: |",
    ]
    for name, seconds, peak, slowest in rows:
        lines.append(f"| {name} | {seconds:.0f} | {peak:.0f} | {slowest:.0f} | "
                     f"{'yes' if seconds <= BUDGET_S else 'NO'} |")
    lines.append("")
    lines.append(f"Torch {torch.__version__}, each lesson in a fresh kernel"
                 + (f", with {args.load} other busy processes" if args.load else "")
                 + f". Training precision under these settings: {precision}.")
    section = f"**{machine}**\n\n" + "\n".join(lines) + "\n"
    print()
    print(section)
    if not args.no_table and not args.load and (args.update or not args.notebooks):
        sections[machine] = section
        text = "".join(f"<!-- machine: {key} -->\n{value}<!-- end -->\n" for key, value in sorted(sections.items()))
        with atomic_write(TABLE, "w") as handle:
            handle.write(text)
        print(f"wrote {TABLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
