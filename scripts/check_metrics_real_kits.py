"""The sanity checks of tests/test_evaluate.py, run on real drum kits (a prepared dataset).

    python scripts/check_metrics_real_kits.py /work/data/hydrogen2

For every class: two disjoint random halves of that class must score closer (FD and KID) than the first half
against an equal number of clips of each other class, and than against white noise; the KID of the two halves
must be near 0 (within 3 standard deviations or 5% of the nearest other-class KID). Then hiss is added to real
clips at rising levels: tail noise and hiss must rise monotonically. Prints Markdown tables; exit 1 when a
check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from drumdiff import evaluation as ev


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="prepared dataset folder (manifest.json)")
    parser.add_argument(
        "--per-set", type=int, default=24, help="clips per set (equal sizes: FD depends on it)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the random halves and the noise")
    parser.add_argument("--classifier", type=Path, default=None, help="classifier file (default: shipped)")
    args = parser.parse_args(argv)

    manifest = json.loads((args.data / "manifest.json").read_text())
    model = ev.load_classifier(args.classifier)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    by_class: dict[str, list[str]] = {}
    for item in manifest["items"]:
        by_class.setdefault(item["class"], []).append(item["path"])

    def load(paths: list[str]) -> torch.Tensor:
        clips = [
            torch.from_numpy(sf.read(args.data / p, dtype="float32", always_2d=True)[0].T.copy())
            for p in paths
        ]
        return torch.stack(clips)  # (N, C, T)

    n = args.per_set
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # class -> (first half, second half) embeddings
    for name, paths in sorted(by_class.items()):
        if len(paths) < 2 * n:
            print(f"{name}: only {len(paths)} clips, need {2 * n}; skipped")
            continue
        chosen = [paths[i] for i in rng.permutation(len(paths))[: 2 * n]]
        emb = ev.compute_features(model, load(chosen)).embeddings
        sets[name] = (emb[:n], emb[n:])
    length, channels = manifest["length"], manifest["channels"]
    noise = torch.randn(n, channels, length, generator=gen) * (
        0.05 + 0.25 * torch.rand(n, 1, 1, generator=gen)
    )
    noise_emb = ev.compute_features(model, noise).embeddings

    failures = []
    print(f"\n{n} clips per set, seed {args.seed}\n")
    print(
        "| class | FD same class | FD nearest other class | FD vs noise | KID x1000 same (+- std) "
        "| KID x1000 nearest other | KID x1000 vs noise | pass |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, (a, b) in sets.items():
        fd_same = ev.frechet_distance(a, b)
        kid_same, kid_std, _ = ev.kernel_inception_distance(a, b)
        others = {o: sets[o][0] for o in sets if o != name}
        fd_other = min(ev.frechet_distance(a, e) for e in others.values())
        kid_other = min(ev.kernel_inception_distance(a, e)[0] for e in others.values())
        fd_noise = ev.frechet_distance(a, noise_emb)
        kid_noise = ev.kernel_inception_distance(a, noise_emb)[0]
        ok = (
            fd_same < fd_other
            and fd_same < fd_noise
            and kid_same < kid_other
            and kid_same < kid_noise
            and abs(kid_same) < max(3 * kid_std, 0.05 * kid_other)
        )
        if not ok:
            failures.append(name)
        print(
            f"| {name} | {fd_same:.2f} | {fd_other:.2f} | {fd_noise:.2f} | {kid_same * 1000:.1f} +- "
            f"{kid_std * 1000:.1f} | {kid_other * 1000:.1f} | {kid_noise * 1000:.1f} | {'yes' if ok else 'NO'} |"
        )

    print("\n| hiss added (dB re clip RMS) | tail dB (mean) | hiss dB (mean) |\n|---|---|---|")
    clips = load([p for paths in by_class.values() for p in paths[:5]])
    hiss = torch.randn(clips.shape, generator=gen, dtype=torch.float64)
    spectrum = torch.fft.rfft(hiss)
    hiss = torch.fft.irfft(
        spectrum * (torch.fft.rfftfreq(length, 1 / manifest["sample_rate"]) > 10000), n=length
    )
    hiss = (hiss / hiss.std()).float()
    rms = clips.square().mean(dim=(1, 2), keepdim=True).sqrt()
    rows = []
    for level in (None, -80, -60, -40, -20):
        noisy = clips if level is None else clips + hiss * rms * 10 ** (level / 20)
        metrics = [ev.artifact_metrics(x, manifest["sample_rate"]) for x in noisy]
        tail = float(np.mean([m["tail_db"] for m in metrics]))
        hiss_db = float(np.mean([m["hiss_db"] for m in metrics]))
        rows.append((tail, hiss_db))
        print(f"| {'none' if level is None else level} | {tail:.1f} | {hiss_db:.1f} |")
    if not all(a[0] < b[0] and a[1] < b[1] for a, b in zip(rows, rows[1:], strict=False)):
        failures.append("hiss monotonicity")

    print("\nall checks pass" if not failures else f"\nFAILED: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
