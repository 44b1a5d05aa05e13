#!/usr/bin/env bash
# The training demo: make a folder of synthetic drums, prepare it, train a tiny class-conditional model for
# 1,500 steps on the CPU (about 3 minutes on 2 cores), export it, then generate kicks, snares and hi-hats with
# spectrogram pictures. Everything lands under demo/train/. The sounds are rough (a 0.16M-parameter model
# trained for minutes): it shows the whole workflow, not the quality of a trained model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate

rm -rf demo/train
python -m drumdiff.synth demo/train/synthetic --per-class 12
drumdiff data prepare demo/train/synthetic --classes folders --out demo/train/data
drumdiff train demo/train/data --run-dir demo/train/run --preset tiny --max-steps 1500 --batch-size 8 --lr 1e-3 \
  --checkpoint-every 500 --preview-every -1 --logger csv
drumdiff export demo/train/run demo/train/model.safetensors
for class in kick snare hihat; do
  drumdiff generate "$class" --model demo/train/model.safetensors -n 2 --steps 20 --seed 1 --out demo/train/out --plot
done
echo "demo: WAV files and spectrogram pictures are in demo/train/out/"
