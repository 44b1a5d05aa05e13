"""Lay out the original tiny-audio-diffusion example clips as one folder per class, for `drumdiff evaluate`.

    python scripts/reference_clips.py ../shared/reference/tiny-audio-diffusion-samples --out /tmp/original
    drumdiff evaluate /tmp/original /work/data/hydrogen2 --ref-split val --classes

kickN.wav / snareN.wav / hihatN.wav are copied to kick/, snare/, hihat/ unchanged; the two percussion files hold
back-to-back 16384-frame clips and are split into percussion/<file>_NN.wav (16-bit, like the source).

`--real DATA` lays out, instead, real clips of a prepared dataset's train split with the same class balance
(seed 0): the "a model that reproduced its training data" column of docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

CLIP_FRAMES = 16384  # one percussion clip in percussion_*_samples.wav


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", type=Path, help="folder with kick1.wav ... and percussion_*_samples.wav")
    parser.add_argument("--out", type=Path, required=True, help="folder to write class subfolders into")
    parser.add_argument(
        "--real",
        type=Path,
        default=None,
        help="prepared dataset: copy as many of its train-split clips per class as SRC has (seed 0) instead",
    )
    args = parser.parse_args(argv)
    if args.real is not None:
        return real_clips(args.src, args.real, args.out)

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


def class_counts(src: Path) -> Counter:
    """How many clips of each class `main` lays out from SRC."""
    counts: Counter = Counter()
    for path in sorted(src.glob("*.wav")):
        match = re.fullmatch(r"(kick|snare|hihat)\d+", path.stem)
        if match:
            counts[match.group(1)] += 1
        elif path.stem.startswith("percussion"):
            counts["percussion"] += sf.info(path).frames // CLIP_FRAMES
    return counts


def real_clips(src: Path, data: Path, out: Path, seed: int = 0) -> int:
    """Copy random train-split clips of `data`, as many per class as SRC holds, into `out/<class>/`."""
    manifest = json.loads((data / "manifest.json").read_text())
    rng = np.random.default_rng(seed)
    written = 0
    for name, count in sorted(class_counts(src).items()):
        paths = sorted(i["path"] for i in manifest["items"] if i["split"] == "train" and i["class"] == name)
        if len(paths) < count:
            print(f"{data}: {len(paths)} train clips of {name}, need {count}", file=sys.stderr)
            return 2
        (out / name).mkdir(parents=True, exist_ok=True)
        for k in rng.choice(len(paths), size=count, replace=False):
            shutil.copyfile(data / paths[k], out / name / Path(paths[k]).name)
            written += 1
    print(f"wrote {written} real train-split clips under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
