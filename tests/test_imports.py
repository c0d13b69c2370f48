"""``import deploykit`` and the CLI must not import any ML framework."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import HEAVY, run_cli


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_every_module_imports_without_frameworks():
    code = f"""
import importlib, pkgutil, sys
import deploykit
names = [m.name for m in pkgutil.walk_packages(deploykit.__path__, 'deploykit.')
         if not m.name.endswith('__main__')]
for n in names:
    importlib.import_module(n)
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})
assert len(names) > 10, names
assert not heavy, heavy
print(len(names))
"""
    r = _fresh(code)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) > 10


def test_cli_help_imports_no_framework():
    code = f"""
import sys
from deploykit.cli import main
for argv in (['--help'], ['train', '--help'], ['what-if', '--help']):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, e.code
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})
assert not heavy, heavy
"""
    r = _fresh(code)
    assert r.returncode == 0, r.stderr


def test_console_script_and_module_entry_point():
    r = run_cli("--help")
    assert r.returncode == 0
    assert "train" in r.stdout and "what-if" in r.stdout
    script = Path(sys.executable).with_name("deploykit")  # installed by pip into the venv
    v = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0 and v.stdout.startswith("deploykit ")


def test_public_api_resolves_to_functions_even_after_submodule_imports():
    import deploykit
    import deploykit.training
    from deploykit.training import load_model, train

    assert deploykit.train is train and deploykit.load_model is load_model
    assert callable(deploykit.what_if) and callable(deploykit.load_dataset)
