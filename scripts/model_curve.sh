#!/usr/bin/env bash
# Quality against sampler steps for one model: generate N clips of every class at each step count, then
# `drumdiff evaluate` them against a prepared dataset's held-out split(s). Writes OUT/steps-S/ (clips) and
# OUT/steps-S.SPLIT.json (the evaluation), and prints one summary line per step count and split.
#
#   bash scripts/model_curve.sh MODEL DATA OUT [N] [STEPS...]
#   bash scripts/model_curve.sh src/drumdiff/weights/drums.safetensors /work/data/corpus /tmp/curve 16 5 10 20 40
#
# The sampler is the default (dpmpp-2m, log-snr schedule); GUIDANCE=G in the environment sets the guidance
# scale (default: drumdiff's default) and then names the folders steps-S-gG; GATE=1 generates with --gate
# (the tail gate, drumdiff.postprocess) and adds -gate to the names. The seeds are fixed (clip i of class c
# uses seed 1000 + i), so two models are compared on the same noise.
set -euo pipefail
model=$1 data=$2 out=$3 n=${4:-16}
shift 4 || shift $#
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(5 10 20 40)
splits=(val)
if python - "$data" <<'EOF'
import json, sys
items = json.load(open(f"{sys.argv[1]}/manifest.json"))["items"]
sys.exit(0 if any(item.get("split") == "test" for item in items) else 1)
EOF
then
  splits+=(test)
fi
flags=()
suffix=
if [ -n "${GUIDANCE:-}" ]; then
  flags=(--guidance "$GUIDANCE")
  suffix="-g$GUIDANCE"
fi
if [ "${GATE:-0}" = 1 ]; then
  flags+=(--gate)
  suffix="$suffix-gate"
fi
mkdir -p "$out"
for s in "${steps[@]}"; do
  folder="$out/steps-$s$suffix"
  rm -rf "$folder"
  for class in kick snare hihat percussion; do
    drumdiff generate "$class" --model "$model" -n "$n" --steps "$s" "${flags[@]}" --seed 1000 --out "$folder" --no-progress \
      > /dev/null
  done
  for split in "${splits[@]}"; do
    drumdiff evaluate "$folder" "$data" --ref-split "$split" --classes --train "$data" --json --no-progress \
      > "$out/steps-$s$suffix.$split.json"
    python - "$out/steps-$s$suffix.$split.json" "$s$suffix" "$split" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
a, c, t = r["artifacts"], r.get("classes", {}), r.get("train", {})
print(f"steps {sys.argv[2]:>3} vs {sys.argv[3]:4}: fd {r['fd']:.2f} kid {r['kid']:.3f} "
      f"accuracy {c.get('accuracy')} (macro {c.get('macro_accuracy')}) variety {r['variety']:.2f} "
      f"tail median {a['tail_db_median']:.1f} dB hiss median {a['hiss_db_median']:.1f} dB "
      f"nn similarity max {t.get('nn_similarity_max')} memorised {t.get('memorised')}")
EOF
  done
done
