"""The console script ``tvb-torchfit``: each command run as a user runs it, and what it prints checked against
TVB itself (the parity and compare commands build real TVB simulators)."""
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tvb_torchfit import cli


def _script():
    """The installed console script, or ``python -m tvb_torchfit.cli`` where it is not on PATH."""
    exe = shutil.which("tvb-torchfit")
    return [exe] if exe else [sys.executable, "-m", "tvb_torchfit.cli"]


def _rows(out: str):
    """(monitor, samples TVB, samples torch, times, max abs, max rel) for each row of a Comparison table."""
    pattern = r"^(\S.*?\))\s+(\d+)/(\d+)\s+(same|DIFF)\s+(\S+)\s+(\S+)$"
    return [(m[0], int(m[1]), int(m[2]), m[3], float(m[4]), float(m[5])) for m in re.findall(pattern, out, re.M)]


def test_parity_quick_runs_and_reports_agreement(capsys):
    assert cli.main(["parity", "--quick"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert len(rows) == 2                                 # the two 1 s deterministic cases
    assert all(r[1] == r[2] == 10000 and r[3] == "same" for r in rows)
    exact, float64 = rows[0][5], rows[1][5]
    assert exact < 1e-14                                  # TVB-exact mode: TVB's float32 history emulated
    assert float64 < 1e-6                                 # float64 mode: TVB's float32 history is the difference
    worst = float(out.rsplit(":", 1)[1])
    assert worst == pytest.approx(max(exact, float64), rel=1e-3)


@pytest.mark.parametrize("mode, bound", [([], 1e-14), (["--float64"], 1e-6)])
def test_compare_command_against_tvb(mode, bound):
    cmd = _script() + ["compare", "--integrator", "HeunStochastic", "--length", "50", "--monitor", "Raw",
                       "--monitor", "TemporalAverage", "--period", "1"] + mode
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = _rows(done.stdout)
    assert [r[0].split("(")[0] for r in rows] == ["Raw", "TemporalAverage"]
    assert rows[0][1] == rows[0][2] == 500 and rows[1][1] == rows[1][2] == 50
    assert all(r[3] == "same" and r[5] < bound for r in rows), done.stdout
    assert "HeunStochastic" in done.stdout and "exact=" + ("False" if mode else "True") in done.stdout


@pytest.mark.parametrize("args, message", [
    (["compare", "--dt", "-0.1"], "expected a positive number"),
    (["compare", "--integrator", "RungeKutta4thOrderDeterministic"], "invalid choice"),
    (["demo", "--steps", "0"], "expected a positive number"),
    (["fit-everything"], "invalid choice"),
])
def test_bad_arguments_are_refused_before_any_work(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "fit-demo", "parity", "compare"])
def test_subcommands_have_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage" in out
    if command in ("demo", "compare"):
        assert "ms" in out                                # the units are stated


def test_a_deterministic_simulator_starts_from_the_seeded_history():
    """TVB draws a deterministic integrator's initial history from numpy's unseeded global generator; the CLI's
    simulators draw it from RandomState(seed): the same settings give the same start (parity is reproducible)."""
    a, b = cli.build_simulator(seed=3), cli.build_simulator(seed=3)
    c = cli.build_simulator(seed=4)
    assert np.array_equal(a.history.buffer, b.history.buffer)
    assert not np.array_equal(a.history.buffer, c.history.buffer)
