"""Progress bars for long work: the one place that makes them (tqdm), so that every bar behaves the same.

In a terminal a bar redraws at tqdm's usual rate; written to a file or a pipe (a batch job's log, a Dask worker's
captured stderr) it writes a line at most every ``LOG_INTERVAL`` seconds, not one per step.
"""
import sys
from typing import Optional, TextIO

#: seconds between a bar's lines when its stream is not a terminal
LOG_INTERVAL = 30.0


def bar(total: int, desc: str, unit: str, *, initial: int = 0, disable: bool = False,
        file: Optional[TextIO] = None):
    """A tqdm bar on ``file`` (default stderr): redrawn every 0.1 s on a terminal, every ``LOG_INTERVAL`` s
    elsewhere."""
    from tqdm.auto import tqdm
    stream = sys.stderr if file is None else file
    interactive = bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable, file=stream,
                mininterval=0.1 if interactive else LOG_INTERVAL)
