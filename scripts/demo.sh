#!/usr/bin/env bash
# The demo: make a folder of synthetic drums, prepare it, train a tiny class-conditional model for a few
# hundred steps on the CPU, export it, then generate kicks, snares and hi-hats with a spectrogram picture.
# Everything lands under demo/. Takes a few minutes on a laptop CPU; the sounds are rough (a tiny model,
# briefly trained): it shows the whole workflow, not the quality of a shipped model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate

rm -rf demo
python -m drumdiff.synth demo/synthetic --per-class 12
drumdiff data prepare demo/synthetic --classes folders --out demo/data
drumdiff train demo/data --run-dir demo/run --preset tiny --max-steps 300 --batch-size 8 \
  --checkpoint-every 100 --preview-every 0 --logger csv
drumdiff export demo/run demo/model.safetensors
for class in kick snare hihat; do
  drumdiff generate "$class" --model demo/model.safetensors -n 2 --steps 20 --seed 1 --out demo/out --plot
done
echo "demo: WAV files and spectrogram pictures are in demo/out/"
