#!/usr/bin/env bash
# Create .venv (if missing) and install drumdiff with its training and test extras, on a fresh machine.
# torch is installed first, pinned, so that pip does not pull a multi-GB CUDA build by accident on CPU machines;
# if a torch >= 2.4 is already importable in .venv it is kept (CUDA users: install your CUDA torch first).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q "torch==2.13.0"
fi
python -m pip install -q -e ".[train,dev]"
# The original library, for the parity tests and the side-by-side benchmarks. Its metadata asks for
# another torch and torchaudio, so it goes in without dependencies (see bench/original_lib.py).
python -m pip install -q --no-deps "audio-diffusion-pytorch==0.1.3" "a-unet==0.0.16" "einops>=0.6"
