"""Test-session settings.

Under pytest-xdist (``-n auto``: one worker process per core) each worker runs torch on one thread, so that
workers do not oversubscribe the cores; TVB's numba kernels are single-threaded already.
"""
import os

import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
