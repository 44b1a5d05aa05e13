"""Lay out the original tiny-audio-diffusion example clips as one folder per class, for `drumdiff evaluate`.

    python scripts/reference_clips.py ../shared/reference/tiny-audio-diffusion-samples --out /tmp/original
    drumdiff evaluate /tmp/original /work/data/hydrogen --ref-split val --classes

kickN.wav / snareN.wav / hihatN.wav are copied to kick/, snare/, hihat/ unchanged; the two percussion files hold
back-to-back 16384-frame clips and are split into percussion/<file>_NN.wav (16-bit, like the source).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import soundfile as sf

CLIP_FRAMES = 16384  # one percussion clip in percussion_*_samples.wav


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", type=Path, help="folder with kick1.wav ... and percussion_*_samples.wav")
    parser.add_argument("--out", type=Path, required=True, help="folder to write class subfolders into")
    args = parser.parse_args(argv)

    written = 0
    for path in sorted(args.src.glob("*.wav")):
        data, rate = sf.read(path, dtype="int16", always_2d=True)  # (T, C), exact 16-bit copy
        match = re.fullmatch(r"(kick|snare|hihat)\d+", path.stem)
        if match:
            folder = args.out / match.group(1)
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / path.name, data, rate, subtype="PCM_16")
            written += 1
        elif path.stem.startswith("percussion"):
            if len(data) % CLIP_FRAMES:
                print(f"{path}: {len(data)} frames is not a multiple of {CLIP_FRAMES}", file=sys.stderr)
                return 2
            folder = args.out / "percussion"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(len(data) // CLIP_FRAMES):
                clip = data[k * CLIP_FRAMES : (k + 1) * CLIP_FRAMES]
                sf.write(folder / f"{path.stem}_{k + 1:02d}.wav", clip, rate, subtype="PCM_16")
                written += 1
    print(f"wrote {written} clips under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
