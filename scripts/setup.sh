#!/usr/bin/env bash
# Create ./.venv and install bids_sclesion with the right PyTorch build:
# a CPU-only build where no NVIDIA GPU is visible, the CUDA build otherwise.
# Override with TORCH_VARIANT=cpu|cuda. Safe to run again (does nothing new).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

if ! python -c "import torch" >/dev/null 2>&1; then
    variant="${TORCH_VARIANT:-}"
    if [ -z "$variant" ]; then
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then variant=cuda; else variant=cpu; fi
    fi
    echo "[setup] installing torch ${TORCH_VERSION} (${variant})"
    if [ "$variant" = cuda ]; then
        pip install -q "torch==${TORCH_VERSION}"
    else
        # Only torch comes from PyTorch's CPU index; its dependencies come from PyPI below.
        pip install -q --no-deps --retries 1 --timeout 15 "torch==${TORCH_VERSION}" \
            --index-url https://download.pytorch.org/whl/cpu
    fi
fi
if ! python -c "import bids_sclesion, pytest, tensorboard, selenium, check_jsonschema, mkdocs, hypothesis" >/dev/null 2>&1; then
    echo "[setup] installing bids_sclesion and its dependencies"
    pip install -q -e ".[test]"
fi
python -c "import torch, bids_sclesion; print(f'[setup] bids_sclesion {bids_sclesion.__version__}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}')"
