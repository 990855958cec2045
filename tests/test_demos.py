"""Every demo script with a command line starts and documents itself: ``python demos/X.py --help`` exits 0 and prints
its usage (a script that no longer imports, or whose options clash, fails here before anyone runs it for minutes)."""
import pathlib
import subprocess
import sys

import pytest

DEMOS = pathlib.Path(__file__).resolve().parents[1] / "demos"
SCRIPTS = sorted(p for p in DEMOS.glob("*.py") if "argparse" in p.read_text())


def test_there_are_demo_scripts():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_demo_help(script):
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                         cwd=script.parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout
