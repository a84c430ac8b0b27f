"""The package as users get it: a wheel and an sdist that install and work from a clean venv.

The distributions are built once per module with ``python -m build --no-isolation`` (the
build backend, hatchling, comes from the test environment, so building needs no network).
The last test creates a fresh virtual environment, installs the built wheel there with pip
(its dependencies come from PyPI or pip's cache), and runs notebooks/quickstart.ipynb against
a sandbox with a kernel running on that venv's interpreter, far from the source tree.
"""

from __future__ import annotations

import ast
import configparser
import email.parser
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import nbformat
import pytest

import nanobanana_jupyter

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "nanobanana_jupyter"
VERSION_FILE = PACKAGE / "_version.py"
DIST_NAME = "nanobanana_jupyter"
IMAGE_TYPES = ("image/jpeg", "image/png")
KERNEL_NAME = "nanobanana-clean-venv"

pytestmark = pytest.mark.slow


def _run(
    command: list[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output when it fails or hangs."""
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        output = [
            o.decode(errors="replace") if isinstance(o, bytes) else o or ""
            for o in (exc.stdout, exc.stderr)
        ]
        pytest.fail(f"{command[:4]} did not finish in {timeout} s:\n" + "\n".join(output))
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command[:6])} exited {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def _declared_version() -> str:
    """The version string assigned in _version.py (read without importing anything)."""
    tree = ast.parse(VERSION_FILE.read_text(encoding="utf-8"))
    values = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ]
    assert len(values) == 1, "_version.py must assign __version__ exactly once, to a string"
    return values[0]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the wheel and the sdist once; return their paths."""
    missing = [m for m in ("build", "twine", "hatchling") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: pip install -e '.[test]' installs them")
    out = tmp_path_factory.mktemp("dist")
    _run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--sdist",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        timeout=180,
        cwd=ROOT,
    )
    wheels = sorted(out.glob(f"{DIST_NAME}-*.whl"))
    sdists = sorted(out.glob(f"{DIST_NAME}-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_twine_check_passes(dist: dict[str, Path]) -> None:
    """`twine check --strict` accepts both distributions (metadata and README render on PyPI)."""
    result = _run(
        [
            sys.executable,
            "-m",
            "twine",
            "check",
            "--strict",
            str(dist["wheel"]),
            str(dist["sdist"]),
        ],
        timeout=120,
    )
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_wheel_contents(dist: dict[str, Path]) -> None:
    """The wheel ships py.typed, every module and the sandbox, and no tests or notebooks."""
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
    assert "nanobanana_jupyter/py.typed" in names
    assert {
        "nanobanana_jupyter/sandbox/__init__.py",
        "nanobanana_jupyter/sandbox/__main__.py",
    } <= names
    unwanted = ("tests/", "notebooks/", "scripts/", "benchmarks/", "examples/", "docs/")
    assert not [n for n in names if n.startswith(unwanted) or "/tests/" in n]
    assert not [n for n in names if n.endswith((".pyc", ".ipynb")) or "__pycache__" in n]
    sources = {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert sources <= names, f"modules missing from the wheel: {sorted(sources - names)}"


def test_wheel_declares_the_console_script(dist: dict[str, Path]) -> None:
    """entry_points.txt names `nanobanana = nanobanana_jupyter._views.cli:main`, and that exists."""
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        entry_points = next(
            n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")
        )
        text = wheel.read(entry_points).decode()
    parser = configparser.ConfigParser()
    parser.read_string(text)
    assert parser["console_scripts"]["nanobanana"].strip() == "nanobanana_jupyter._views.cli:main"
    from nanobanana_jupyter._views import cli as _cli

    assert callable(_cli.main)


def test_version_is_defined_once_and_matches_the_metadata(dist: dict[str, Path]) -> None:
    """_version.py is the only place with the version; the wheel, sdist and import agree on it."""
    version = _declared_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.post\d+)?(?:\.dev\d+)?", version)
    assert nanobanana_jupyter.__version__ == version
    others = [
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path != VERSION_FILE and re.search(r"^__version__\s*=", path.read_text(), re.M)
    ]
    assert others == [], f"__version__ is also assigned in {others}"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^dynamic\s*=\s*\[[^\]]*"version"', pyproject, re.M)
    assert not re.search(r"^version\s*=", pyproject, re.M), "a static version in pyproject.toml"
    assert re.search(r'^path\s*=\s*"nanobanana_jupyter/_version\.py"', pyproject, re.M)

    with zipfile.ZipFile(dist["wheel"]) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(wheel.read(name).decode())
    assert metadata["Version"] == version
    assert metadata["Name"] == "nanobanana-jupyter"
    assert "pandas" in metadata.get_all("Provides-Extra", [])
    assert dist["wheel"].name.startswith(f"{DIST_NAME}-{version}-")

    with tarfile.open(dist["sdist"]) as sdist:
        prefix = f"{DIST_NAME}-{version}/"
        members = set(sdist.getnames())
        pkg_info = sdist.extractfile(prefix + "PKG-INFO")
        assert pkg_info is not None
        sdist_metadata = email.parser.Parser().parsestr(pkg_info.read().decode())
    assert sdist_metadata["Version"] == version
    assert {
        prefix + "pyproject.toml",
        prefix + "README.md",
        prefix + "nanobanana_jupyter/py.typed",
    } <= members


# Run by the clean venv's interpreter: start a sandbox from the *installed* package, execute
# the notebook with a kernel on that same interpreter, and report where the code came from.
DRIVER = textwrap.dedent(
    """
    import json
    import os
    import sys

    import nbformat
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell

    import nanobanana_jupyter
    from nanobanana_jupyter.sandbox import Sandbox

    notebook, executed, workdir, kernel_name = sys.argv[1:5]
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(new_code_cell(
        "import importlib.metadata, json, sys, nanobanana_jupyter\\n"
        "print('PROVENANCE ' + json.dumps({'executable': sys.executable,"
        " 'module': nanobanana_jupyter.__file__, 'version': nanobanana_jupyter.__version__,"
        " 'metadata_version': importlib.metadata.version('nanobanana-jupyter')}))"
    ))
    with Sandbox(time_scale=0.05, max_side=256) as sandbox:
        os.environ.update({
            "NANOBANANA_BASE_URL": sandbox.url,
            "NANOBANANA_ALLOW_LOCAL_URLS": "1",
            "NANOBANANA_API_KEY": sandbox.api_key,
            "NANOBANANA_DATA_DIR": os.path.join(workdir, "data"),
            "NANOBANANA_WAIT": "1",
        })
        client = NotebookClient(
            nb, timeout=90, startup_timeout=90, kernel_name=kernel_name,
            resources={"metadata": {"path": workdir}},
        )
        client.execute()
    nbformat.write(nb, executed)
    print("DRIVER " + json.dumps({"module": nanobanana_jupyter.__file__}))
    """
)


def _clean_env(tmp_path: Path, venv: Path) -> dict[str, str]:
    """The environment of the clean venv's processes: nothing from this checkout or this venv."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
        and not k.startswith(("NANOBANANA_", "DEFAPI_", "JUPYTER_", "IPYTHON"))
    }
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    env.update(
        {
            "PATH": str(bin_dir) + os.pathsep + env.get("PATH", ""),
            "VIRTUAL_ENV": str(venv),
            "JUPYTER_PATH": str(tmp_path / "jupyter"),
            "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
            "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
            "IPYTHONDIR": str(tmp_path / "ipython"),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            "PYTHONNOUSERSITE": "1",
        }
    )
    return env


@pytest.mark.kernel
@pytest.mark.integration
@pytest.mark.timeout(420)
def test_fresh_install_runs_the_quickstart(dist: dict[str, Path], tmp_path: Path) -> None:
    """The wheel installed into a new venv runs notebooks/quickstart.ipynb against a sandbox,
    in a kernel on that venv's Python, importing the installed package, and shows images."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    env = _clean_env(tmp_path, venv)
    work = tmp_path / "work"  # the kernel's cwd: far from the checkout, so it cannot import it
    work.mkdir()
    _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            f"{dist['wheel']}[pandas]",
            "nbclient",
            "ipykernel",
        ],
        timeout=300,
        env=env,
        cwd=work,
    )
    # The console script is installed and runs.
    script = venv / ("Scripts/nanobanana.exe" if os.name == "nt" else "bin/nanobanana")
    assert "generate" in _run([str(script), "--help"], timeout=60, env=env, cwd=work).stdout

    # A kernelspec that names the clean venv's interpreter explicitly.
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "nanobanana clean venv",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    executed = tmp_path / "quickstart.executed.ipynb"
    notebook = ROOT / "notebooks" / "quickstart.ipynb"
    result = _run(
        [str(python), str(driver), str(notebook), str(executed), str(work), KERNEL_NAME],
        timeout=240,
        env=env,
        cwd=work,
    )
    driver_report = json.loads(result.stdout.split("DRIVER ", 1)[1].splitlines()[0])
    assert Path(driver_report["module"]).is_relative_to(venv), driver_report

    nb = nbformat.read(executed, as_version=4)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if any(t in o.get("data", {}) for t in IMAGE_TYPES)]
    assert images, "the quickstart run from the clean venv shows no image"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    kernel = json.loads(text.split("PROVENANCE ", 1)[1].splitlines()[0])
    assert Path(kernel["executable"]).is_relative_to(venv), kernel
    assert Path(kernel["module"]).is_relative_to(venv), kernel
    assert not Path(kernel["module"]).is_relative_to(ROOT), kernel
    assert kernel["version"] == kernel["metadata_version"] == _declared_version()
