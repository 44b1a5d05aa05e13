#!/usr/bin/env bash
# A model candidate from a training run, with everything that decides whether it ships: the fp16 model file,
# its originality index, the per-noise-level denoising check, and `drumdiff evaluate` against the held-out
# splits (scripts/model_curve.sh) at the given sampler steps.
#
#   bash scripts/model_candidate.sh RUN DATA OUT [N] [STEPS...]
#   bash scripts/model_candidate.sh /work/runs/drums /work/data/corpus /work/runs/candidate 8 20
#
# OUT gets drums.safetensors (fp16 EMA weights), drums.index.safetensors (DATA's train split, the shipped
# classifier), denoise.json and curve/steps-S.SPLIT.json. Shipping it means copying the first two into
# src/drumdiff/weights/ (docs/model.md says when a candidate may ship).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash scripts/model_candidate.sh RUN DATA OUT [N] [STEPS...]" >&2
  exit 2
fi
run=$1 data=$2 out=$3 n=${4:-8}
shift $(($# < 4 ? $# : 4))
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(20)
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
drumdiff export "$run" "$out/drums.safetensors" --fp16 --force
python -m drumdiff.evaluation.originality "$data" --out "$out/drums.index.safetensors" --no-progress
python "$here/denoise_check.py" "$out/drums.safetensors" "$data" > "$out/denoise.json"
bash "$here/model_curve.sh" "$out/drums.safetensors" "$data" "$out/curve" "$n" "${steps[@]}"
