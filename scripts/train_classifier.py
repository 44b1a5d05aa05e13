"""Train the drum classifier that `drumdiff evaluate` ships with, from a prepared dataset.

    drumdiff data prepare /usr/share/hydrogen/data/drumkits --classes hydrogen --out /work/data/hydrogen
    python scripts/train_classifier.py /work/data/hydrogen --out src/drumdiff/weights/drum_classifier.safetensors

Trains on the manifest's `train` split only and reports accuracy on its `val` split (kits never seen in
training). Augmentation: random gain, small time shifts, added noise at a random level, random stereo
balance. Deterministic for a given seed (CPU). Prints the held-out confusion matrix as a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from tqdm import tqdm

from drumdiff.nn.classifier import ClassifierConfig, DrumClassifier, save_classifier


def split_items(manifest: dict, split: str, classes: list[str]) -> list[dict]:
    return [i for i in manifest["items"] if i["split"] == split and i["class"] in classes]


def is_labelled(item: dict, unlabelled: re.Pattern) -> bool:
    """False for items whose instrument name says nothing about the sound (Hydrogen's "Sample: file.flac")."""
    instrument = (item.get("provenance") or {}).get("instrument", "")
    return not unlabelled.search(instrument)


def load_split(
    root: Path, manifest: dict, split: str, classes: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """All clips of one split as `([N, C, T] float32, [N] class index)`, in `split_items` order."""
    length, channels = manifest["length"], manifest["channels"]
    audio, labels = [], []
    for item in split_items(manifest, split, classes):
        data, _ = sf.read(root / item["path"], dtype="float32", always_2d=True)  # (T, C)
        clip = np.zeros((channels, length), np.float32)
        n = min(length, data.shape[0])
        clip[:, :n] = data[:n, :channels].T
        audio.append(clip)
        labels.append(classes.index(item["class"]))
    return torch.from_numpy(np.stack(audio)), torch.tensor(labels)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random speed (pitch and decay) +-0.2 octave, shift -512..+3072 samples, EQ tilt +-6 dB/decade, stereo
    balance, noise -70..-25 dB re peak (half the clips) and gain +-12 dB; `[B, C, T] -> [B, C, T]`."""
    b, c, t = x.shape
    device = x.device
    u = lambda *shape: torch.rand(*shape, generator=generator).to(device)  # noqa: E731
    # Speed and shift in one linear-interpolation resampling: output sample j reads input (j - shift) * speed.
    speed = 2 ** ((u(b, 1) * 2 - 1) * 0.2)  # (B, 1)
    shift = u(b, 1) * 3584 - 512  # (B, 1) samples
    pos = (torch.arange(t, device=device)[None, :] - shift) * speed  # (B, T)
    valid = ((pos >= 0) & (pos <= t - 1)).float()
    pos = pos.clamp(0, t - 1)
    lo = pos.floor().long().clamp(max=t - 2)
    frac = (pos - lo)[:, None, :]  # (B, 1, T)
    lo = lo[:, None, :].expand(b, c, t)
    out = (x.gather(2, lo) * (1 - frac) + x.gather(2, lo + 1) * frac) * valid[:, None, :]
    # EQ: a gain linear in log-frequency around 1 kHz, applied in the frequency domain.
    freqs = torch.fft.rfftfreq(t, 1 / 44100, device=device).clamp_min(20.0)  # (F,)
    tilt_db = (u(b, 1, 1) * 2 - 1) * 6 * torch.log10(freqs / 1000.0)  # (B, 1, F)
    out = torch.fft.irfft(torch.fft.rfft(out) * 10 ** (tilt_db / 20), n=t)
    out = out * (1.0 + (u(b, c, 1) - 0.5) * 0.4)  # stereo balance, up to +-20% per channel
    peak = out.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    noise_db = -70 + u(b, 1, 1) * 45
    use_noise = (u(b, 1, 1) < 0.5).float()
    noise = torch.randn(b, c, t, generator=generator).to(device) * peak * 10 ** (noise_db / 20) * use_noise
    gain = 10 ** ((u(b, 1, 1) * 24 - 12) / 20)
    return (out + noise) * gain


def spec_mask(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SpecAugment: one band of up to 8 mel bins and one span of up to 8 frames set to the floor (-1)."""
    b, _, m, n = image.shape
    out = image.clone()
    for i in range(b):
        f = int(torch.randint(0, 9, (), generator=generator))
        f0 = int(torch.randint(0, m - f + 1, (), generator=generator))
        w = int(torch.randint(0, 9, (), generator=generator))
        w0 = int(torch.randint(0, n - w + 1, (), generator=generator))
        out[i, :, f0 : f0 + f, :] = -1.0
        out[i, :, :, w0 : w0 + w] = -1.0
    return out


@torch.no_grad()
def predict(model: DrumClassifier, audio: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """`([N, K] logits, [N, D] raw embeddings)` in eval mode."""
    model.eval()
    logits, raws = [], []
    for start in range(0, len(audio), batch):
        raw = model.raw_embed(audio[start : start + batch])
        raws.append(raw)
        logits.append(model.head(raw))
    return torch.cat(logits), torch.cat(raws)


def confusion(labels: torch.Tensor, predicted: torch.Tensor, k: int) -> np.ndarray:
    matrix = np.zeros((k, k), dtype=int)
    for true, pred in zip(labels.tolist(), predicted.tolist(), strict=True):
        matrix[true, pred] += 1
    return matrix


def markdown_confusion(matrix: np.ndarray, classes: list[str]) -> str:
    lines = [
        "| true \\ predicted | " + " | ".join(classes) + " | recall |",
        "|---" * (len(classes) + 2) + "|",
    ]
    for i, name in enumerate(classes):
        recall = matrix[i, i] / max(1, matrix[i].sum())
        cells = " | ".join(str(v) for v in matrix[i])
        lines.append(f"| **{name}** | {cells} | {recall:.1%} |")
    return "\n".join(lines)


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="prepared dataset folder (with manifest.json)")
    parser.add_argument("--out", type=Path, required=True, help="classifier .safetensors to write")
    parser.add_argument("--epochs", type=int, default=40, help="passes over the (class-balanced) train split")
    parser.add_argument("--batch-size", type=int, default=32, help="clips per step")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (cosine decay)")
    parser.add_argument("--seed", type=int, default=0, help="seed for init, sampling and augmentation")
    parser.add_argument(
        "--report-every", type=int, default=0, help="print val accuracy every N steps (0: off)"
    )
    parser.add_argument(
        "--unlabelled",
        default=r"^Sample: ",
        help="regex on the Hydrogen instrument name: such items carry no class information; they are left out "
        "of training and reported separately on val",
    )
    parser.add_argument(
        "--val-groups",
        default=None,
        help="comma-separated kit (group) names to hold out instead of the manifest's split (cross-validation)",
    )
    parser.add_argument(
        "--predictions", type=Path, default=None, help="write per-clip val predictions (JSON)"
    )
    parser.add_argument(
        "--width", type=int, default=16, help="channels of the first conv block (doubles per block)"
    )
    parser.add_argument("--n-mels", type=int, default=64, help="mel bands of the front end")
    parser.add_argument("--top-db", type=float, default=100.0, help="log-mel floor below the loudest bin")
    parser.add_argument("--embed-dim", type=int, default=64, help="embedding size")
    parser.add_argument(
        "--device", default="cpu", help="torch device (results are only bit-reproducible on CPU)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--fp16", action=argparse.BooleanOptionalAction, default=True, help="store fp16 weights"
    )
    args = parser.parse_args(argv)

    commit = git_commit()  # the code that trains, before anything else can change the checkout
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    manifest_path = args.data / "manifest.json"
    manifest_bytes = manifest_path.read_bytes()
    manifest = json.loads(manifest_bytes)
    classes = list(manifest["classes"])
    if args.val_groups is not None:  # cross-validation: hold out these kits, train on all others
        held_out = {g.strip() for g in args.val_groups.split(",") if g.strip()}
        unknown = held_out - {i["group"] for i in manifest["items"]}
        if unknown:
            parser.error(f"--val-groups: no such group in the manifest: {', '.join(sorted(unknown))}")
        for item in manifest["items"]:
            item["split"] = "val" if item["group"] in held_out else "train"
    config = ClassifierConfig(
        class_names=tuple(classes),
        sample_rate=manifest["sample_rate"],
        length=manifest["length"],
        channels=tuple(args.width * 2**i for i in range(4)),
        embed_dim=args.embed_dim,
        n_mels=args.n_mels,
        top_db=args.top_db,
    )

    unlabelled = re.compile(args.unlabelled)
    train_x, train_y = load_split(args.data, manifest, "train", classes)
    keep = torch.tensor([is_labelled(i, unlabelled) for i in split_items(manifest, "train", classes)])
    train_x, train_y = train_x[keep], train_y[keep]
    val_x, val_y = load_split(args.data, manifest, "val", classes)
    val_items = split_items(manifest, "val", classes)
    val_named = torch.tensor([is_labelled(i, unlabelled) for i in val_items])
    kits = {s: sorted({i["group"] for i in manifest["items"] if i["split"] == s}) for s in ("train", "val")}
    print(
        f"left out {int((~keep).sum())} unlabelled train clips; {int((~val_named).sum())} unlabelled val clips"
    )
    print(
        f"train {len(train_x)} clips from {len(kits['train'])} kits, val {len(val_x)} from {len(kits['val'])}"
    )
    print(
        "train per class:",
        dict(zip(classes, torch.bincount(train_y, minlength=len(classes)).tolist(), strict=True)),
    )

    device = torch.device(args.device)
    model = DrumClassifier(config).to(device)
    train_x, val_x = train_x.to(device), val_x.to(device)
    train_y, val_y = train_y.to(device), val_y.to(device)
    counts = torch.bincount(train_y, minlength=len(classes)).float()
    weights = (1.0 / counts.clamp_min(1))[train_y].cpu()  # class-balanced sampling
    steps_per_epoch = max(1, len(train_x) // args.batch_size)
    total = args.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=total, pct_start=0.1
    )
    started = time.time()
    model.train()
    with tqdm(total=total, desc="training classifier", unit="step") as bar:
        for step in range(total):
            index = torch.multinomial(weights, args.batch_size, replacement=True, generator=generator)
            index = index.to(device)
            x = augment(train_x[index], generator)
            image = spec_mask(model.frontend(x), generator)  # (B, 1, M, N)
            x = model.blocks(image)
            raw = model.project(torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1))
            loss = F.cross_entropy(model.head(raw), train_y[index], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update()
            if args.report_every and (step + 1) % args.report_every == 0:  # diagnostics only, no selection
                logits, _ = predict(model, val_x)
                matrix = confusion(val_y, logits.argmax(1), len(classes))
                recall = matrix.diagonal() / matrix.sum(1).clip(min=1)
                tqdm.write(
                    f"step {step + 1}: val macro {recall.mean():.3f} recalls {recall.round(2).tolist()}"
                )
                model.train()
    seconds = time.time() - started

    train_logits, train_raw = predict(model, train_x)
    model.set_embedding_stats(train_raw)
    model = model.cpu()
    val_y, train_y, val_logits, train_logits = val_y.cpu(), train_y.cpu(), None, train_logits.cpu()
    val_logits, _ = predict(model, val_x.cpu())
    val_pred = val_logits.argmax(1)
    matrix = confusion(val_y[val_named], val_pred[val_named], len(classes))
    recalls = [matrix[i, i] / max(1, matrix[i].sum()) for i in range(len(classes))]
    macro = float(np.mean(recalls))
    matrix_all = confusion(val_y, val_pred, len(classes))
    macro_all = float(np.mean([matrix_all[i, i] / max(1, matrix_all[i].sum()) for i in range(len(classes))]))
    train_acc = float((train_logits.argmax(1) == train_y).float().mean())
    print(f"train accuracy {train_acc:.3f} ({seconds:.0f} s)")
    print(f"held-out macro accuracy, labelled instruments ({int(val_named.sum())} clips): {macro:.3f}")
    print(markdown_confusion(matrix, classes))
    print(
        f"held-out macro accuracy, all {len(val_y)} clips (incl. unlabelled ones as the manifest says): {macro_all:.3f}"
    )
    print(markdown_confusion(matrix_all, classes))
    if args.predictions:
        probs = val_logits.softmax(1)
        rows = [
            {
                "path": item["path"],
                "group": item["group"],
                "instrument": (item.get("provenance") or {}).get("instrument", ""),
                "class": item["class"],
                "predicted": classes[int(val_pred[k])],
                "confidence": round(float(probs[k].max()), 3),
            }
            for k, item in enumerate(val_items)
        ]
        args.predictions.write_text(json.dumps(rows, indent=1))

    provenance = {
        "script": "scripts/train_classifier.py",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "git_commit": commit,
        "device": args.device,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "train_kits": kits["train"],
        "val_kits": kits["val"],
        "train_clips": len(train_x),
        "val_clips": len(val_x),
        "epochs": args.epochs,
        "steps": total,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "train_accuracy": round(train_acc, 4),
        "val_macro_accuracy": round(macro, 4),
        "val_macro_accuracy_all": round(macro_all, 4),
        "val_confusion_all": matrix_all.tolist(),
        "unlabelled_instruments": args.unlabelled,
        "val_groups_override": args.val_groups,
        "val_recall": {c: round(float(r), 4) for c, r in zip(classes, recalls, strict=True)},
        "val_confusion": matrix.tolist(),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_classifier(args.out, model, provenance=provenance, fp16=args.fp16)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
