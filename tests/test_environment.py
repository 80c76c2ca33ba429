"""pyproject.toml, constraints.txt and environment.yml must name the same packages and versions."""

import re
import tomllib

import yaml

from conftest import ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _constraints(file: str = "constraints.txt") -> dict[str, str]:
    pins = {}
    for line in (ROOT / file).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_name(name)] = version
    return pins


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    return {_name(r): r.split("==")[1] for r in pip if "==" in r}


def _pyproject() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def test_every_dependency_is_pinned_in_constraints():
    pins = _constraints()
    missing = [name for name in _pyproject() if name not in pins]
    assert not missing, f"add these to constraints.txt: {missing}"
    assert pins["torch"] == "2.13.0"


def test_environment_yml_lists_the_same_packages_as_pyproject():
    env = _environment()
    assert set(_pyproject()) == set(env), \
        f"environment.yml and pyproject.toml differ: {sorted(set(_pyproject()) ^ set(env))}"


def test_environment_yml_uses_the_constraints_versions():
    pins = _constraints()
    env = _environment()
    drift = {name: (version, pins.get(name)) for name, version in env.items() if pins.get(name) != version}
    assert not drift, f"environment.yml differs from constraints.txt (env, constraints): {drift}"


def test_pyproject_keeps_ranges_not_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = [r for r in project["dependencies"] if "==" in r]
    assert not pinned, f"core dependencies must be ranges so Colab keeps its torch: {pinned}"


def test_constraints_floor_pins_the_lowest_version_of_every_range():
    """constraints-floor.txt (`make test-floor`) must test pyproject.toml's floors, not other versions."""
    from packaging.version import Version

    floors = _constraints("constraints-floor.txt")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wrong = {}
    for requirement in project["dependencies"]:
        name, floor = _name(requirement), requirement.split(">=")[1].split(",")[0]
        expected = "2.13.0" if name == "torch" else floor       # the only CPU torch CI has: see the file
        if name not in floors or Version(floors[name]) != Version(expected):
            wrong[name] = (floor, floors.get(name))
    assert not wrong, f"pyproject.toml's floor and constraints-floor.txt's pin differ (floor, pin): {wrong}"
