#!/usr/bin/env bash
# Create .venv (if missing) and install drumdiff with its training, web-page and test extras, on a fresh machine,
# plus Debian's chromium for the browser test of `drumdiff app` (Playwright drives it; no browser is downloaded)
# and Debian's sox, whose `soxi -a` tests/test_tags.py uses to read the provenance drumdiff embeds in a FLAC,
# and Debian's hydrogen-data, whose drumkit.xsd tests/test_kit.py validates the kits of `drumdiff kit` against.
# torch is installed first, pinned, so that pip does not pull a multi-GB CUDA build by accident on CPU machines;
# if a torch >= 2.4 is already importable in .venv it is kept (CUDA users: install your CUDA torch first).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v soxi >/dev/null 2>&1 || missing+=(sox)
[ -f /usr/share/hydrogen/data/xsd/drumkit.xsd ] || missing+=(hydrogen-data)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: ${missing[*]} missing, so tests/test_app.py (chromium), tests/test_tags.py (soxi) or" \
      "tests/test_kit.py (drumkit.xsd) will skip (sudo apt-get install ${missing[*]})" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q "torch==2.13.0"
fi
python -m pip install -q -e ".[train,app,dev]"
# The original library, for the parity tests and the side-by-side benchmarks. Its metadata asks for
# another torch and torchaudio, so it goes in without dependencies (see bench/original_lib.py).
python -m pip install -q --no-deps "audio-diffusion-pytorch==0.1.3" "a-unet==0.0.16" "einops>=0.6"
