"""roundtrip/forked.py: calls at once in forked processes, results in order, failures named by index."""
import os

import pytest

from tvb_torchfit.errors import ParameterError
from tvb_torchfit.roundtrip.forked import WorkerError, forked_map


def test_results_in_order_and_equal_to_the_serial_calls():
    items = [3, 1, 4, 1, 5]
    assert forked_map(lambda x: x * x, items, processes=2) == [x * x for x in items]
    assert forked_map(lambda x: x * x, items, processes=1) == [x * x for x in items]


def test_the_calls_run_in_other_processes():
    parent = os.getpid()
    pids = forked_map(lambda _: os.getpid(), range(3), processes=3)
    assert parent not in pids


def test_a_failing_call_is_named_by_its_index():
    def f(x):
        if x == 2:
            raise FloatingPointError("blew up")
        return x
    with pytest.raises(WorkerError, match="FloatingPointError: blew up") as err:
        forked_map(f, [0, 1, 2, 3], processes=2)
    assert err.value.index == 2


def test_a_dying_worker_is_reported():
    with pytest.raises(WorkerError, match="died"):
        forked_map(lambda x: os._exit(3), [0, 1], processes=2)


@pytest.mark.parametrize("processes", [0, 1.5, True])
def test_bad_process_count_is_refused(processes):
    with pytest.raises(ParameterError, match="processes"):
        forked_map(abs, [1, 2], processes=processes)


def test_torch_in_the_children_after_the_parent_used_its_thread_pool(tmp_path):
    """A fork copies the parent's OpenMP pool state but not its threads: torch's first parallel region in a child
    waited forever (the demo hung in its correction runs). Run in a subprocess with a timeout, so a hang fails."""
    import subprocess
    import sys
    script = tmp_path / "fork_after_threads.py"
    script.write_text(
        "import torch\n"
        "from tvb_torchfit.roundtrip.forked import forked_map\n"
        "torch.set_num_threads(2)\n"
        "a = torch.randn(1500, 1500); (a @ a).sum()\n"
        "def child(i):\n"
        "    b = torch.randn(400, 400)\n"
        "    return float((b @ b).sum() + torch.exp(torch.randn(200000)).sum())\n"
        "print(len(forked_map(child, [0, 1], 2)))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "2", out.stderr[-2000:]
