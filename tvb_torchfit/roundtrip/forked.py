"""Independent runs at once, in forked child processes: ``forked_map``.

TVB's loop and the twin's block kernel are single-threaded, so on a machine with several cores independent runs
(TVB's validation seeds, the twin's correction realisations) overlap when each runs in its own process. ``fork``
gives every child the parent's objects as they are (simulators, monkeypatched functions) without pickling them;
only the results travel back, through a pipe. Where ``fork`` is not available (Windows; macOS's default) or one
process is asked for, the calls run one after the other in this process: the numbers are the same either way,
since each call computes exactly what it would serially. Each child runs torch on one thread (see ``_child``).
"""
import multiprocessing
import traceback
from typing import Any, Callable, List, Optional, Sequence

import torch

from .. import checks

__all__ = ["forked_map", "WorkerError"]


class WorkerError(RuntimeError):
    """A call failed in its worker process: ``index`` (its position in ``items``) and the worker's message
    (exception type, message and traceback)."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index, self.message = index, message


def _child(conn, fn, item) -> None:
    try:
        # one thread per child: the children share the cores, and a fork inherits the parent's OpenMP thread pool
        # state without its threads, so torch's first parallel region in the child would wait for them forever
        torch.set_num_threads(1)
        conn.send(("ok", fn(item)))
    except BaseException as exc:                       # report it to the parent, whatever it is
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def forked_map(fn: Callable[[Any], Any], items: Sequence[Any], processes: int = 1) -> List[Any]:
    """``[fn(item) for item in items]``, up to ``processes`` calls at once in forked child processes (module
    docstring). A failing call raises ``WorkerError`` naming its index (the other children are stopped)."""
    processes = checks.integer(processes, "processes", minimum=1)
    items = list(items)
    if processes == 1 or len(items) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [fn(item) for item in items]
    ctx = multiprocessing.get_context("fork")
    results: List[Optional[Any]] = [None] * len(items)
    pending = list(enumerate(items))
    running = []
    while pending or running:
        while pending and len(running) < processes:
            i, item = pending.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(child, fn, item), daemon=True)
            proc.start()
            child.close()
            running.append((i, proc, parent))
        i, proc, parent = running.pop(0)              # oldest first: the calls take about equally long
        try:
            status, payload = parent.recv()
        except EOFError:
            status, payload = "error", f"the process died (exit code {proc.exitcode})"
        proc.join()
        if status != "ok":
            for _, other, _ in running:
                other.terminate()
            raise WorkerError(i, payload)
        results[i] = payload
    return results
