"""The package as a user installs it: build the sdist and the wheel with PyPI's ``build``
(the wheel from the sdist, so a file missing from the sdist is caught too), install the
wheel with its dependencies into a clean venv, and check what a user runs and imports.

Which files must be in the wheel is derived, not listed here: every file in the source
tree of each top-level package that ``[tool.setuptools.packages.find]`` includes (every
module of every subpackage, so Django's management commands once ``zibrato_django``
lands, and every data file beside them: py.typed, the dashboard's static files), and
every file that a ``[tool.setuptools.package-data]`` glob matches (each glob must match
something). A data file that is not declared, or a subpackage without ``__init__.py``,
fails the test instead of shipping a wheel that breaks at import.

Select with ``pytest -m packaging`` (``-m "not packaging"`` leaves it out); ``make test``
runs it. About 10 s with pip's cache warm: the build downloads setuptools into its
isolated environment and the install downloads pyzmq, msgpack and requests once.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
# Never copied into the build: local environments, caches and build output.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "node_modules"
)
STEP_TIMEOUT = 300  # seconds per build or install: the first run may download a lot


def run(*args: str | Path, cwd: Path, timeout: float = 60) -> str:
    """Run a command outside the checkout (cwd) with no PYTHONPATH; return its stdout."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


class Built:
    """The built distributions and a clean venv with the wheel installed."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        source = workdir / "source"
        shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
        dist = workdir / "dist"
        run(
            sys.executable,
            "-m",
            "build",
            "--outdir",
            dist,
            source,
            cwd=workdir,
            timeout=STEP_TIMEOUT,
        )
        (self.wheel,) = dist.glob("zibrato-*.whl")
        (self.sdist,) = dist.glob("zibrato-*.tar.gz")
        self.venv = workdir / "venv"
        run(sys.executable, "-m", "venv", "--without-pip", self.venv, cwd=workdir)
        self.python = self.venv / "bin" / "python"
        # The project's pip installs into the clean venv; pip's cache makes it quick.
        run(
            sys.executable, "-m", "pip", "--python", self.python, "install", "--quiet", self.wheel,
            cwd=workdir, timeout=STEP_TIMEOUT,
        )  # fmt: skip

    def python_says(self, code: str) -> str:
        return run(self.python, "-c", code, cwd=self.workdir).strip()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    yield Built(tmp_path_factory.mktemp("packaging"))


def package_files(include: list[str]) -> set[str]:
    """Every file under the top-level packages that ``include`` names (``packages.find``):
    modules of every subpackage, and every other file there (static files, templates...).
    A file that must not ship belongs outside the package."""
    files: set[str] = set()
    for top in sorted(ROOT.iterdir()):
        if (top / "__init__.py").is_file() and any(
            fnmatch.fnmatchcase(top.name, pattern) for pattern in include
        ):
            for path in top.rglob("*"):
                relative = path.relative_to(ROOT).as_posix()
                if path.is_file() and not not_shipped(relative):
                    files.add(relative)
    return files


def not_shipped(relative: str) -> bool:
    """Return whether a file in a package directory is build output, never shipped."""
    return "__pycache__" in relative or relative.endswith((".pyc", ".so"))


def expected_package_files() -> set[str]:
    """Every file the wheel must hold, as paths inside it, derived from pyproject.toml."""
    setuptools: dict[str, Any] = PYPROJECT["tool"]["setuptools"]
    expected = package_files(setuptools["packages"]["find"]["include"])
    for package, patterns in setuptools.get("package-data", {}).items():
        package_dir = ROOT / package.replace(".", "/")
        for pattern in patterns:
            matched = [path for path in package_dir.glob(pattern) if path.is_file()]
            assert matched, f"package-data {package}: {pattern!r} matches no file in the tree"
            expected.update(path.relative_to(ROOT).as_posix() for path in matched)
    return expected


def test_expected_files_include_the_ones_we_know_of() -> None:
    expected = expected_package_files()
    assert {"zibrato/py.typed", "zibrato/__main__.py", "zibrato/backends/console.py"} <= expected
    assert not [path for path in expected if "/tests/" in path or path.startswith("tests/")]


def test_the_wheel_holds_every_module_and_data_file(built: Built) -> None:
    names = set(zipfile.ZipFile(built.wheel).namelist())
    missing = expected_package_files() - names
    assert not missing, f"not in {built.wheel.name}: {sorted(missing)}"
    assert built.wheel.name == f"zibrato-{VERSION}-py3-none-any.whl"


def test_the_sdist_holds_what_a_rebuild_needs(built: Built) -> None:
    with tarfile.open(built.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    wanted = expected_package_files() | {"pyproject.toml", "README.md"}
    assert not wanted - names, f"not in {built.sdist.name}: {sorted(wanted - names)}"


def test_the_console_script_and_python_m_report_the_version(built: Built) -> None:
    script = run(built.venv / "bin" / "zibrato", "--version", cwd=built.workdir)
    module = run(built.python, "-m", "zibrato", "--version", cwd=built.workdir)
    assert script.strip() == module.strip() == f"zibrato {VERSION}"
    assert VERSION.split(".")[0] == "2"  # the successor of the 2013 releases 0.1.0 and 0.2.0
    assert "broker" in run(built.python, "-m", "zibrato", "--help", cwd=built.workdir)


def test_the_installed_package_is_the_wheel_typed_and_complete(built: Built) -> None:
    location = Path(built.python_says("import zibrato; print(zibrato.__file__)"))
    assert built.venv in location.parents, f"imported from {location}, not the clean venv"
    assert (location.parent / "py.typed").is_file()
    for path in expected_package_files():
        assert (location.parent.parent / path).is_file(), f"{path} was not installed"
    assert built.python_says("import zibrato; print(zibrato.__version__)") == VERSION


def test_the_metadata_declares_extras_and_entry_points(built: Built) -> None:
    code = (
        "from importlib.metadata import metadata, entry_points;"
        "m = metadata('zibrato');"
        "print(m['Requires-Python']);"
        "print(','.join(sorted(m.get_all('Provides-Extra'))));"
        "print(entry_points(group='console_scripts')['zibrato'].value);"
        "print(entry_points(group='pytest11')['zibrato'].value)"
    )
    requires, extras, script, plugin = built.python_says(code).splitlines()
    assert requires == ">=3.11"
    assert set(extras.split(",")) == set(PYPROJECT["project"]["optional-dependencies"])
    assert {"django", "flask", "test", "bench"} <= set(extras.split(","))
    assert (script, plugin) == ("zibrato.cli:main", "zibrato.testing")
