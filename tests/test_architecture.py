"""The layers of docs/architecture.md, checked with import-linter (the contracts are in
pyproject.toml). The subpackages live in top-level folders mapped by setuptools' package-dir,
which import-linter cannot follow, so the check runs on a tree of symlinks shaped like the
installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def package_tree(dest: Path, extra: dict[str, str] | None = None) -> Path:
    """dest/qmtgan: the package's own modules and each mapped subpackage, as symlinks; `extra`
    adds modules (path under the package -> source), whose stage is then linked file by file."""
    extra = extra or {}
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    pkg = dest / "qmtgan"
    pkg.mkdir(parents=True)
    for module in (ROOT / mapping["qmtgan"]).glob("*.py"):
        (pkg / module.name).symlink_to(module)
    for name, folder in mapping.items():
        if name.count(".") != 1:  # deeper packages come with their stage's folder
            continue
        stage = name.split(".")[1]
        if not any(path.startswith(stage + "/") for path in extra):
            (pkg / stage).symlink_to(ROOT / folder, target_is_directory=True)
            continue
        (pkg / stage).mkdir()
        for entry in (ROOT / folder).iterdir():
            (pkg / stage / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    for path, source in extra.items():
        (pkg / path).unlink(missing_ok=True)  # a symlink to the real module: replace, never write through
        (pkg / path).write_text(source)
    return dest


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--no-cache", str(ROOT / "pyproject.toml")], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold(tmp_path):
    proc = lint_imports(package_tree(tmp_path / "tree"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    contracts = PYPROJECT["tool"]["importlinter"]["contracts"]
    assert f"{len(contracts)} kept, 0 broken" in proc.stdout, proc.stdout[-2000:]


TILING = ROOT / "runtime" / "tiling.py"


@pytest.mark.parametrize("path, source, broken", [
    ("train/_reaches_up.py", "from qmtgan.quantize import model\n", "The pipeline's layers"),
    ("runtime/_needs_tf.py", "import tensorflow\n", "The device runtime is TensorFlow-free"),
    ("runtime/_host_cli.py", "def f():\n    from qmtgan.runtime import cli\n", "Only the top CLI imports"),
    ("runtime/_one_way.py", "from qmtgan.runtime import decode\n", None),  # a new top: still acyclic
    # tiling, which stream imports, importing stream: a cycle
    ("runtime/tiling.py", TILING.read_text() + "\nfrom qmtgan.runtime import stream  # noqa\n",
     "The runtime's modules import each other without cycles"),
])
def test_a_forbidden_import_breaks_its_contract(tmp_path, path, source, broken):
    before = TILING.read_text()
    proc = lint_imports(package_tree(tmp_path / "tree", {path: source}))
    assert TILING.read_text() == before  # the tree never writes through to the sources
    if broken is None:
        assert proc.returncode == 0, proc.stdout[-3000:]
        return
    assert proc.returncode != 0 and "1 broken" in proc.stdout, proc.stdout[-3000:]
    assert broken in proc.stdout.split("Broken contracts")[1], proc.stdout[-3000:]


def test_the_board_gets_what_its_entry_points_import_and_nothing_else(tmp_path):
    from qmtgan.targets.device_files import DEVICE_ENTRY_POINTS, device_modules, stage_runtime

    shipped = device_modules()
    assert "cli.py" not in shipped  # the host's click commands
    assert {m.rsplit(".", 1)[1] + ".py" for m in DEVICE_ENTRY_POINTS} <= set(shipped)
    assert device_modules(("qmtgan.runtime.errors",)) == ["__init__.py", "errors.py"]
    tree = stage_runtime(tmp_path / "board")
    assert sorted(p.name for p in (tree / "qmtgan" / "runtime").iterdir()) == shipped
    # the shipped tree alone imports every entry point (this host's Python, no other qmtgan)
    code = ("import importlib, sys\n"
            "for m in sys.argv[1:]:\n"
            "    assert importlib.import_module(m).__file__.startswith(sys.path[1]), m\n")
    proc = subprocess.run([sys.executable, "-c", code, *DEVICE_ENTRY_POINTS], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(tree), "PYTHONNOUSERSITE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_docs_cli_md_lists_the_shared_options_of_todays_commands():
    from qmtgan.cli import main
    from qmtgan.cli_doc import markdown

    written = (ROOT / "docs" / "cli.md").read_text()
    assert written == markdown(main), "docs/cli.md is stale: python -m qmtgan.cli_doc > docs/cli.md"
    assert "| `--model` |" in written and "| `--patch-size` |" in written
