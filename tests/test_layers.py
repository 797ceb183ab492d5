"""Imports run one way: ``speech`` (the library) <- ``jobs``, ``serve`` <- ``bench`` <- ``cli``.

Every module of a package is imported in a fresh interpreter, module by module; after each
import, the top-level packages the package must not load are looked up in ``sys.modules``, so
the first module that brings one in is the one named. Packages share an interpreter where
the order makes that sound: ``jobs`` is walked after ``speech`` (which loads nothing ``jobs``
may not), ``bench`` after both; ``serve`` must not load ``jobs``, so it gets its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import REPO

#: package -> the top-level packages none of its modules may import (directly or not).
FORBIDDEN = {
    "speech": ("ray", "jobs", "serve", "bench", "cli"),
    "jobs": ("serve", "bench", "cli"),
    "serve": ("jobs", "bench", "cli"),
    "bench": ("cli",),
}

#: The interpreters: each walks its packages in this order.
_INTERPRETERS = (("speech", "jobs", "bench"), ("serve",))
#: Watched beside the forbidden packages, to show that the walk sees what a module loads.
_CANARY = "torch"

# argv: JSON {package: [watched, ...]} in walk order. Prints {package: {"modules": [...],
# "first": {watched: the first module after whose import it was loaded, or "<before>"}}}.
_WALK = r"""
import importlib, json, pathlib, sys
walks = {}
for package, watched in json.loads(sys.argv[1]).items():
    first = {w: "<before>" for w in watched if w in sys.modules}
    # The files, not pkgutil.walk_packages: that imports every subpackage before the walk starts.
    files = sorted(pathlib.Path(package).rglob("*.py"))
    names = [".".join(f.with_suffix("").parts).removesuffix(".__init__") for f in files if f.name != "__main__.py"]
    for name in names:
        importlib.import_module(name)
        first.update({w: name for w in watched if w in sys.modules and w not in first})
    walks[package] = {"modules": names, "first": first}
print(json.dumps(walks))
"""


@pytest.fixture(scope="module")
def walks() -> dict[str, dict]:
    def walk(packages: tuple[str, ...]) -> dict:
        watched = {p: [*FORBIDDEN[p], _CANARY] for p in packages}
        done = subprocess.run([sys.executable, "-c", _WALK, json.dumps(watched)],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert sorted(p for group in _INTERPRETERS for p in group) == sorted(FORBIDDEN)
    with ThreadPoolExecutor(len(_INTERPRETERS)) as pool:
        return {package: w for result in pool.map(walk, _INTERPRETERS) for package, w in result.items()}


@pytest.mark.parametrize("package", FORBIDDEN)
def test_package_never_imports_the_layers_above(walks, package):
    walk = walks[package]
    assert len(walk["modules"]) > 1, walk  # the walk really found the package's modules
    loaded = {name: module for name, module in walk["first"].items() if name in FORBIDDEN[package]}
    assert loaded == {}, f"{package} imports what it must not (package: first module loading it): {loaded}"


def test_the_walk_sees_what_a_module_loads(walks):
    """The check can fail: the library's model code loads torch, and the walk names the module."""
    first = walks["speech"]["first"][_CANARY]
    assert first.startswith("speech.") and first != "<before>", first


def test_installed_packages_are_the_layers():
    """pyproject installs exactly the layers (the benchmark harness and the CLI are top-level
    packages, not part of the library)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["speech"] == "cli:main"
    assert sorted(project["tool"]["setuptools"]["packages"]["find"]["include"]) == sorted(
        ["speech*", "jobs*", "serve*", "bench*", "cli*"])
    assert not (REPO / "speech" / "bench").exists() and not (REPO / "speech" / "cli.py").exists()
