#!/usr/bin/env bash
# The prepared run on a lent GPU: install the carried wheels, unpack the clips, train until MINUTES after
# this script started, export the EMA weights (fp16), and leave in $OUT only files of at most 16 MiB:
#
#   run(command="bash scripts/gpu_train.sh .gpu 8", carry=[".gpu"], timeout_s=590)
#
# usage: bash scripts/gpu_train.sh FOLDER [MINUTES] [more `drumdiff train` flags, which win]
#   FOLDER   made by scripts/gpu_pack.py (pack.json, clips/, init.safetensors, wheels/)
#   MINUTES  wall-clock minutes from this script's start at which training gets its Ctrl-C (SIGINT: the step
#            in progress finishes and a checkpoint is written); default 8, at most 9. Export and split take
#            seconds after that, so the whole command stays under 9.5 minutes.
# $OUT gets: log.txt (everything printed), parts.json + drums.safetensors[.partK], metrics.csv, config.json.
# Optional environment: OUT (default FOLDER/out), GPU_WORK (scratch, default /tmp/drumdiff-gpu; emptied
# first), PYTHON (default python3). The same script runs on a CPU for tests (tests/test_gpu_pack.py).
#
# Batch 128, from memory (docs/training.md, "A lent GPU"): `small` without gradient checkpointing adds 93 MiB
# per clip in bf16 as bench/activation_memory.py counts it on the CPU; the H200 measured 1.6x that count for
# `seed` (435 MiB per clip against 269 counted: CUDA autocast keeps fp32 norm outputs), so about 150 MiB per
# clip: 128 clips take about 19 GiB, plus about 1.5 GiB of weights, AdamW, EMA and CUDA context, of the 139
# GiB (batch 800 would still fit). Memory is no limit; the H200 is still bound by kernel launches at batch 16
# (docs/training.md: the time per step hardly grows from batch 1 to 16), so more clips per step cost little.
set -uo pipefail

FOLDER=${1:?usage: bash scripts/gpu_train.sh FOLDER [MINUTES] [drumdiff train flags]}
MINUTES=${2:-8}
shift $(($# < 2 ? $# : 2))
EXTRA=("$@")
START=$(date +%s)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
OUT=${OUT:-$FOLDER/out}
WORK=${GPU_WORK:-/tmp/drumdiff-gpu}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

BATCH=128
LR=4e-4
CHECKPOINT_EVERY=250 # steps; also a validation-loss point each time
KILL_AFTER=60        # seconds after the Ctrl-C before a stuck run is killed (its last checkpoint stays)

main() {
    echo "gpu_train: $(date -u +%FT%TZ) folder $FOLDER, stop at ${MINUTES} min, extra flags: ${EXTRA[*]:-none}"
    local seconds
    seconds=$(awk -v m="$MINUTES" 'BEGIN { if (m + 0 <= 0 || m + 0 > 9) exit 1; printf "%d", m * 60 }') || {
        echo "error: MINUTES must be a number above 0 and at most 9, got $MINUTES"
        return 2
    }
    [ -f "$FOLDER/pack.json" ] || {
        echo "error: $FOLDER/pack.json missing: make the folder with scripts/gpu_pack.py"
        return 2
    }
    rm -rf "$WORK" && mkdir -p "$WORK" || return 2

    local wheels=("$FOLDER"/wheels/*.whl)
    if [ -e "${wheels[0]}" ]; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$WORK/site" "${wheels[@]}" || return 2
        export PYTHONPATH="$WORK/site:$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
        echo "installed ${#wheels[@]} wheels into $WORK/site"
    else
        export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
        echo "no wheels in $FOLDER: using the soundfile and soxr installed here"
    fi
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    fi
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

    "$PYTHON" "$HERE/gpu_bundle.py" "$FOLDER" "$WORK/data" || return 2
    echo "unpacked at +$(($(date +%s) - START)) s"

    local init=(--preset small-edm-pos-skip) init_file
    # pack.json's init.file, from FOLDER: init.safetensors, or a file of the checkout that travels anyway
    init_file=$("$PYTHON" -c 'import json, sys; print((json.load(open(sys.argv[1])).get("init") or {}).get("file", ""))' \
        "$FOLDER/pack.json")
    if [ -n "$init_file" ]; then
        init=(--init-from "$FOLDER/$init_file")
        echo "init from $FOLDER/$init_file"
    fi
    local left=$((seconds - ($(date +%s) - START)))
    if [ "$left" -lt 10 ]; then
        echo "error: only $left s left for training after the setup"
        return 2
    fi
    local monitor=""
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -l 30 &
        monitor=$!
    fi
    echo "training for at most $left s (Ctrl-C at +${seconds} s)"
    # --foreground: the Ctrl-C goes to drumdiff alone, not to its data-loader workers (which would die
    # before the step in progress could finish); --preserve-status: drumdiff's own exit code (130 on Ctrl-C).
    timeout --foreground --preserve-status --signal=INT --kill-after="$KILL_AFTER" "$left" \
        "$PYTHON" -m drumdiff train "$WORK/data" --run-dir "$WORK/run" "${init[@]}" \
        --precision bf16-mixed --batch-size "$BATCH" --lr "$LR" --augment --logger csv \
        --checkpoint-every "$CHECKPOINT_EVERY" --preview-every -1 --max-steps 1000000 "${EXTRA[@]}"
    local rc=$?
    [ -n "$monitor" ] && kill "$monitor" 2>/dev/null
    echo "train exit code $rc at +$(($(date +%s) - START)) s (0: --max-steps reached, 130: stopped by the Ctrl-C)"
    if [ ! -f "$WORK/run/checkpoints/last.ckpt" ]; then
        echo "error: no checkpoint was written; nothing to export"
        return 2
    fi

    "$PYTHON" -m drumdiff export "$WORK/run" "$WORK/drums.safetensors" --fp16 --force || return 2
    mkdir -p "$OUT"
    "$PYTHON" "$HERE/gpu_parts.py" "$OUT" "$WORK/drums.safetensors" || return 2
    cp "$WORK/run/config.json" "$OUT/config.json"
    [ -f "$WORK/run/logs/metrics.csv" ] && cp "$WORK/run/logs/metrics.csv" "$OUT/metrics.csv"
    echo "done at +$(($(date +%s) - START)) s; files in $OUT:"
    ls -l "$OUT"
    [ "$rc" -eq 0 ] || [ "$rc" -eq 130 ] || return 3 # exported the last checkpoint, but say it ended badly
}

mkdir -p "$OUT" || exit 2
main 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
