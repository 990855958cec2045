"""The console script: sub-commands exist, parse, and the quick parity run agrees with TVB."""
import pytest

from tvb_torchfit import cli


def test_parity_quick_runs_and_reports_agreement(capsys):
    assert cli.main(["parity", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "largest relative difference" in out
    worst = float(out.rsplit(":", 1)[1])
    assert worst < 1e-6                                   # TVB-exact and float64 modes against TVB itself


@pytest.mark.parametrize("command", ["demo", "fit-demo", "parity", "compare"])
def test_subcommands_have_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_unknown_subcommand_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["fit-everything"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
