"""The installable package: pyproject.toml's wheel holds jaxkp with its bundled weights and
the `jaxkp` command; its dependencies are requirements.txt's; jaxkp never needs train/."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEIGHT_FILES = ["model.safetensors", "config.json", "README.md"]


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def normalized(requirement: str) -> str:
    name, rest = re.match(r"([A-Za-z0-9_.\-]+)(.*)", requirement.replace(" ", "")).groups()
    return re.sub(r"[-_.]+", "-", name).lower() + rest


def test_dependencies_are_those_of_requirements_txt():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = requirement_lines(ROOT / "requirements.txt")
    assert sorted(map(normalized, dependencies)) == sorted(map(normalized, requirements))


def test_nothing_in_jaxkp_imports_train():
    for path in sorted((ROOT / "jaxkp").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not [name for name in names if name.split(".")[0] == "train"], f"{path.name} imports train"


def test_bundled_weights_are_found_in_a_checkout():
    from jaxkp.weights import BUNDLED_WEIGHTS

    assert BUNDLED_WEIGHTS == ROOT / "checkpoints"


@pytest.mark.slow
def test_the_wheel_holds_the_package_its_weights_and_the_command(tmp_path):
    """Builds the wheel as `pip install .` would (from a copy, so no build/ folder is left
    in the checkout) and reads what it holds."""
    pytest.importorskip("setuptools", minversion="77")
    source = tmp_path / "source"
    source.mkdir()
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ["jaxkp", "checkpoints"]:
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True, cwd=tmp_path)
    [wheel] = (tmp_path / "wheel").glob("jaxkp-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        sizes = {info.filename: info.file_size for info in archive.infolist()}
        [entry_points] = [name for name in sizes if name.endswith(".dist-info/entry_points.txt")]
        entry_text = archive.read(entry_points).decode()
    for folder in ["checkpoints", "checkpoints/reference"]:
        # The proposal gate goes with the weights that have one (jaxkp.gate).
        for name in WEIGHT_FILES + [path.name for path in (ROOT / folder).glob("gate.safetensors")]:
            assert sizes.get(f"jaxkp/{folder}/{name}") == (ROOT / folder / name).stat().st_size, f"{folder}/{name}"
    assert {"jaxkp/__init__.py", "jaxkp/__main__.py", "jaxkp/weights.py", "jaxkp/inference.py"} <= sizes.keys()
    assert not [name for name in sizes if name.startswith(("train/", "tests/", "benchmarks/", "app.py"))]
    assert re.search(r"^\[console_scripts\]\s*\njaxkp\s*=\s*jaxkp\.__main__:main\s*$", entry_text, re.MULTILINE)
