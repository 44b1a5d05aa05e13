#!/usr/bin/env bash
# The main job on the shipped model, on a fresh machine: install drumdiff (no extras) into .venv unless the
# python3 on PATH already has it, then generate 4 kicks, 4 snares, 4 hi-hats and 4 percussion one-shots with
# the default sampler, each class with a picture of its waveforms and spectrograms. Everything lands in
# demo/out/ (WAVs, JSON sidecars, one PNG per class). No network is needed once installed: the model is inside
# the package (src/drumdiff/weights/MODEL_CARD.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import drumdiff" 2>/dev/null; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  . .venv/bin/activate
  if ! python -c "import torch" 2>/dev/null; then
    python -m pip install -q "torch==2.13.0"  # pinned: a plain `torch` would pull a multi-GB CUDA build
  fi
  python -c "import drumdiff" 2>/dev/null || python -m pip install -q -e .
fi

rm -rf demo/out
for class in kick snare hihat percussion; do
  python3 -m drumdiff generate "$class" -n 4 --seed 1 --out demo/out --plot --no-progress
done
echo "demo: WAV files and spectrogram pictures are in demo/out/"
