"""Where a model stands, noise level by noise level: how much of the noise its x0 estimate removes, in the
sounding part of real clips and in their silent tails. Prints JSON.

    python scripts/denoise_check.py MODEL.safetensors DATA [--split val] [--clips 16] [--seed 0]

For each t, every clip is noised to x_t = alpha x0 + sigma eps (fixed noise per clip and t) and the model's
estimate x0_hat = alpha x_t - sigma v is compared with x0: `error_db` is the RMS of x0_hat - x0 in dB (full
scale 1), in the `sound` part (the frames of a clip above -60 dB of its peak, in 1/16ths of the clip) and the
`tail` (the frames below -120 dB: digital silence after the decay), beside `noise_db`, the RMS of the noise
in x0's units (20 log10 sigma / alpha) that the estimate started from. A sampler's last steps leave about the
`tail` error of small t in the output's tails: hiss that the validation loss, an average over t, hides.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from drumdiff import audio as audio_io
from drumdiff.data.manifest import load_manifest
from drumdiff.diffusion import alpha_sigma, make_denoiser
from drumdiff.pipeline import load_model

TIMES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
SEGMENTS = 16


def db(power: torch.Tensor) -> float | None:
    """10 log10 of a mean power; None for no samples."""
    value = float(power)
    return None if not math.isfinite(value) else round(10 * math.log10(max(value, 1e-30)), 1)


@torch.no_grad()
def denoise_check(model_path: str, data: Path, *, split: str = "val", clips: int = 16, seed: int = 0) -> dict:
    """The table described in the module docstring, as a dict."""
    pipeline = load_model(model_path, device="cpu")
    manifest = load_manifest(data)
    items = [i for i in manifest["items"] if i["split"] == split][:clips]
    if not items:
        raise SystemExit(f"{data}: no clips in split {split!r}")
    names = list(pipeline.class_names)
    audio = torch.stack([audio_io.read(data / i["path"])[0] for i in items])  # (N, C, T)
    labels = [names.index(i["class"]) if i["class"] in names else None for i in items]
    class_id = None
    if pipeline.config.conditional:
        class_id = torch.tensor([pipeline.config.num_classes if k is None else k for k in labels])
    # frames of 1/16 clip: sound (above -60 dB of the clip's peak) and silent tail (below -120 dB full scale)
    frames = audio.pow(2).mean(dim=1).reshape(len(items), SEGMENTS, -1).mean(dim=-1)  # (N, 16)
    peak = frames.amax(dim=1, keepdim=True)
    sound = frames > peak * 1e-6
    tail = frames < 1e-12
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for t in TIMES:
        tt = torch.full((len(items),), t)
        alpha, sigma = alpha_sigma(tt)
        a, s = alpha.view(-1, 1, 1), sigma.view(-1, 1, 1)
        noise = torch.randn(audio.shape, generator=generator)
        x_t = a * audio + s * noise
        x0 = make_denoiser(
            pipeline.net,
            class_id=class_id,
            sigma_data=pipeline.config.sigma_data,
            skip_scale=pipeline.config.skip_scale,
        )(x_t, tt)
        error = (x0 - audio).pow(2).mean(dim=1)  # (N, T)
        error = error.reshape(len(items), SEGMENTS, -1).mean(dim=-1)  # (N, 16)
        rows.append(
            {
                "t": t,
                "noise_db": round(20 * math.log10(float(sigma[0] / alpha[0])), 1),
                "sound_error_db": db(error[sound].mean()) if bool(sound.any()) else None,
                "tail_error_db": db(error[tail].mean()) if bool(tail.any()) else None,
            }
        )
    return {"model": str(model_path), "data": str(data), "split": split, "clips": len(items), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="model file (.safetensors)")
    parser.add_argument("data", type=Path, help="prepared dataset folder (manifest.json)")
    parser.add_argument("--split", default="val", help="which clips (default val)")
    parser.add_argument("--clips", type=int, default=16, help="how many clips of the split (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = denoise_check(args.model, args.data, split=args.split, clips=args.clips, seed=args.seed)
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
