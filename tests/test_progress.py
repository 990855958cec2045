"""The package's progress bars (``tvb_torchfit.progress``): redrawn often on a terminal, rarely in a log."""
import io

from tvb_torchfit import progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_written_to_a_log_updates_at_most_every_log_interval():
    log = io.StringIO()
    bar = progress.bar(1000, "fit", "step", file=log)
    assert bar.mininterval == progress.LOG_INTERVAL
    for _ in range(1000):
        bar.update(1)
    bar.close()
    assert log.getvalue().count("\r") <= 3          # first draw, the final one, and no per-step redraws


def test_a_bar_on_a_terminal_redraws_at_tqdms_rate_and_can_be_disabled():
    bar = progress.bar(10, "fit", "step", file=_Terminal(), initial=2)
    assert bar.mininterval == 0.1 and bar.n == 2
    bar.close()
    quiet = io.StringIO()
    progress.bar(10, "fit", "step", file=quiet, disable=True).close()
    assert quiet.getvalue() == ""
