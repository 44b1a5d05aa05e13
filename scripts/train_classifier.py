"""Train the drum classifier that `drumdiff evaluate` ships with, from a prepared dataset.

    drumdiff data prepare /usr/share/hydrogen/data/drumkits --classes hydrogen --out /work/data/hydrogen2
    python scripts/train_classifier.py /work/data/hydrogen2 --out src/drumdiff/weights/drum_classifier.safetensors

Trains on the manifest's `train` split only and reports accuracy on its `val` split (kits never seen in
training). `--cv K` instead runs kit-level cross-validation inside the `train` split (the `val` kits are not
loaded at all): model selection happens there. Deterministic for a given seed (CPU). Prints confusion
matrices as Markdown tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from tqdm import tqdm

from drumdiff.evaluation.classifier import ClassifierConfig, DrumClassifier, save_classifier
from drumdiff.files import write_json


def load_items(
    root: Path, manifest: dict, items: list[dict], classes: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The items' clips as `([N, C, T] float32, [N] class index)`, in order."""
    length, channels = manifest["length"], manifest["channels"]
    audio, labels = [], []
    for item in items:
        data, _ = sf.read(root / item["path"], dtype="float32", always_2d=True)  # (T, C)
        clip = np.zeros((channels, length), np.float32)
        n = min(length, data.shape[0])
        clip[:, :n] = data[:n, :channels].T
        audio.append(clip)
        labels.append(classes.index(item["class"]))
    return torch.from_numpy(np.stack(audio)), torch.tensor(labels)


# --subclasses: kinds of instrument inside a class, by name part (first match; else the class itself). The head
# learns these compact groups instead of one blob per class; its class probabilities are their sums.
SUBCLASSES: dict[str, dict[str, list[str]]] = {
    "percussion": {
        "cymbal": ["cymbal", "crash", "ride", "splash", "china"],
        "drum": [
            "tom",
            "drum",
            "conga",
            "bongo",
            "djembe",
            "dununba",
            "kenkeni",
            "sangban",
            "cajon",
            "timbale",
        ],
        "metal": ["bell", "triangle", "agogo"],
        "wood": ["stick", "rim", "click", "clave", "block", "snap"],
        "shaker": ["shaker", "maraca", "cabasa", "tambourine", "guiro"],
    },
    "snare": {"clap": ["clap"]},
}


def subclass_name(item: dict) -> str:
    """`class/kind` for an item, by its instrument name and `SUBCLASSES` (`class` when no kind matches)."""
    instrument = (item.get("provenance") or {}).get("instrument", "").lower()
    for kind, parts in SUBCLASSES.get(item["class"], {}).items():
        if any(part in instrument for part in parts):
            return f"{item['class']}/{kind}"
    return item["class"]


def training_targets(items: list[dict], classes: list[str], subclasses: list[str]) -> torch.Tensor:
    """What the head is trained to predict: `[N]` sub-class indices, or class indices without sub-classes."""
    if not subclasses:
        return torch.tensor([classes.index(i["class"]) for i in items])
    return torch.tensor([subclasses.index(subclass_name(i)) for i in items])


def kit_folds(kits: list[str], k: int) -> list[list[str]]:
    """`k` folds of kits for cross-validation: sorted names, every k-th kit, so each kit is held out once."""
    ordered = sorted(kits)
    return [ordered[i::k] for i in range(k)]


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
        logits.append(model.logits(raw))
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


def prediction_row(item: dict, classes: list[str], probs: torch.Tensor) -> dict:
    """One clip's prediction for `--predictions`: where it comes from, its class, what the model said."""
    return {
        "path": item["path"],
        "group": item["group"],
        "instrument": (item.get("provenance") or {}).get("instrument", ""),
        "class": item["class"],
        "predicted": classes[int(probs.argmax())],
        "confidence": round(float(probs.max()), 3),
        "probs": {name: round(float(p), 4) for name, p in zip(classes, probs, strict=True)},
    }


def macro_accuracy(matrix: np.ndarray) -> float:
    """Mean per-class recall of a confusion matrix (rows = true class)."""
    return float(np.mean(matrix.diagonal() / matrix.sum(1).clip(min=1)))


def sampling_weights(labels: torch.Tensor, instruments: list[str], balance: str) -> torch.Tensor:
    """Per-clip sampling weights `[N]`: every class equally likely; with "instrument", also every instrument
    (kit + name) within its class, so a 5-layer instrument is not drawn 5 times as often as a one-shot."""
    counts = torch.bincount(labels).float()
    if balance == "class":
        return (1.0 / counts)[labels]
    per_instrument = Counter(instruments)
    classes_of = {name: int(label) for name, label in zip(instruments, labels.tolist(), strict=True)}
    per_class = Counter(classes_of.values())  # instruments per class
    return torch.tensor(
        [
            1.0 / (per_class[int(y)] * per_instrument[i])
            for i, y in zip(instruments, labels.tolist(), strict=True)
        ]
    )


def instrument_key(item: dict) -> str:
    """The (kit, instrument name) an item comes from; its file when the manifest has no instrument."""
    instrument = (item.get("provenance") or {}).get("instrument") or item["path"]
    return f"{item['group']}/{instrument}"


def train_model(
    config: ClassifierConfig,
    audio: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
    progress: bool = True,
) -> DrumClassifier:
    """Train one classifier on `[N, C, T]` clips with `[N]` targets (head indices), drawn with `[N]` sampling
    weights; returns it in eval mode on CPU with embedding statistics from the (unaugmented) training clips."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = DrumClassifier(config).to(device)
    audio, targets = audio.to(device), targets.to(device)
    total = epochs * max(1, len(audio) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=0.1)
    model.train()
    for _ in tqdm(range(total), desc="training classifier", unit="step", disable=not progress):
        index = torch.multinomial(weights, batch_size, replacement=True, generator=generator).to(device)
        image = spec_mask(model.frontend(augment(audio[index], generator)), generator)  # (B, 1, M, N)
        loss = F.cross_entropy(model.head(model.features(image)), targets[index], label_smoothing=0.05)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    _, raw = predict(model, audio)
    model.set_embedding_stats(raw)
    return model.cpu().eval()


def cross_validate(
    root: Path,
    manifest: dict,
    classes: list[str],
    subclasses: list[str],
    config: ClassifierConfig,
    args: argparse.Namespace,
) -> int:
    """Kit-level cross-validation inside the manifest's train split; prints per-fold and pooled results."""
    items = [i for i in manifest["items"] if i["split"] == "train" and i["class"] in classes]
    kits = sorted({i["group"] for i in items})
    if not 2 <= args.cv <= len(kits):
        raise SystemExit(f"--cv: need 2 to {len(kits)} folds for {len(kits)} train kits, got {args.cv}")
    audio, labels = load_items(root, manifest, items, classes)
    groups = [i["group"] for i in items]
    weights = sampling_weights(labels, [instrument_key(i) for i in items], args.balance)
    targets = training_targets(items, classes, subclasses)
    pooled = np.zeros((len(classes), len(classes)), dtype=int)
    rows = []
    started = time.time()
    for fold, held_out in enumerate(kit_folds(kits, args.cv)):
        test = torch.tensor([g in held_out for g in groups])
        model = train_model(
            config, audio[~test], targets[~test], weights[~test], epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, device=torch.device(args.device), progress=args.progress,
        )  # fmt: skip
        logits, _ = predict(model, audio[test])
        matrix = confusion(labels[test], logits.argmax(1), len(classes))
        pooled += matrix
        print(f"fold {fold + 1}/{args.cv}: {', '.join(held_out)}: {int(test.sum())} clips, "
              f"macro accuracy {macro_accuracy(matrix):.3f}", flush=True)  # fmt: skip
        probs = logits.softmax(1)
        for row, k in enumerate(np.flatnonzero(test.numpy())):
            rows.append(prediction_row(items[int(k)], classes, probs[row]))
    print(f"cross-validation over {len(kits)} train kits ({len(items)} clips, {time.time() - started:.0f} s): "
          f"pooled macro accuracy {macro_accuracy(pooled):.3f}")  # fmt: skip
    print(markdown_confusion(pooled, classes))
    if args.predictions:
        write_json(args.predictions, rows, indent=1)
    return 0


HELD_OUT = ("val", "test")  # held-out kits, and the held-out source (corpus.sh: lmms-common)


def report_split(
    name: str, model: DrumClassifier, items: list[dict], audio: torch.Tensor, labels: torch.Tensor,
    classes: list[str],
) -> dict:  # fmt: skip
    """Print and return one held-out split's macro accuracy, recalls and confusion matrix."""
    logits, _ = predict(model, audio)
    matrix = confusion(labels, logits.argmax(1), len(classes))
    recalls = matrix.diagonal() / matrix.sum(1).clip(min=1)
    macro = macro_accuracy(matrix)
    kits = sorted({i["group"] for i in items})
    print(f"{name}: held-out macro accuracy ({len(labels)} clips of {', '.join(kits)}): {macro:.3f}")
    print(markdown_confusion(matrix, classes))
    return {
        "kits": kits,
        "clips": len(labels),
        "macro_accuracy": round(macro, 4),
        "recall": {c: round(float(r), 4) for c, r in zip(classes, recalls, strict=True)},
        "confusion": matrix.tolist(),
        "predictions": [
            prediction_row(item, classes, p) for item, p in zip(items, logits.softmax(1), strict=True)
        ],
    }


def train_and_save(
    root: Path, manifest_bytes: bytes, manifest: dict, classes: list[str], subclasses: list[str],
    config: ClassifierConfig, args: argparse.Namespace, argv: list[str] | None, commit: str,
) -> int:  # fmt: skip
    """Train on the manifest's train split, report on each held-out split (val kits, test source), write it."""
    train_items = [i for i in manifest["items"] if i["split"] == "train" and i["class"] in classes]
    held_items = {
        s: [i for i in manifest["items"] if i["split"] == s and i["class"] in classes] for s in HELD_OUT
    }
    held_items = {s: items for s, items in held_items.items() if items}
    if "val" not in held_items:
        raise SystemExit(f"{root}: the manifest has no val clips of the classes {', '.join(classes)}")
    train_x, train_y = load_items(root, manifest, train_items, classes)
    train_kits = sorted({i["group"] for i in train_items})
    print(f"train {len(train_x)} clips from {len(train_kits)} kits; held out: " + ", ".join(
        f"{s} {len(items)} clips" for s, items in held_items.items()
    ))  # fmt: skip
    print(
        "train per class:",
        dict(zip(classes, torch.bincount(train_y, minlength=len(classes)).tolist(), strict=True)),
    )
    started = time.time()
    model = train_model(
        config, train_x, training_targets(train_items, classes, subclasses),
        sampling_weights(train_y, [instrument_key(i) for i in train_items], args.balance),
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, device=torch.device(args.device), progress=args.progress,
    )  # fmt: skip
    seconds = time.time() - started
    train_logits, _ = predict(model, train_x)
    train_acc = float((train_logits.argmax(1) == train_y).float().mean())
    print(f"train accuracy {train_acc:.3f} ({seconds:.0f} s)")
    reports = {
        s: report_split(s, model, items, *load_items(root, manifest, items, classes), classes)
        for s, items in held_items.items()
    }
    if args.predictions:
        write_json(args.predictions, {s: r["predictions"] for s, r in reports.items()}, indent=1)
    val = reports["val"]
    provenance = {
        "script": "scripts/train_classifier.py",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "git_commit": commit,
        "device": args.device,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "train_kits": train_kits,
        "val_kits": val["kits"],
        "train_clips": len(train_x),
        "val_clips": val["clips"],
        **{f"{s}_kits": r["kits"] for s, r in reports.items() if s != "val"},
        **{f"{s}_clips": r["clips"] for s, r in reports.items() if s != "val"},
        "epochs": args.epochs,
        "steps": args.epochs * max(1, len(train_x) // args.batch_size),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "balance": args.balance,
        "subclasses": subclasses,
        "train_seconds": round(seconds),
        "train_accuracy": round(train_acc, 4),
        **{
            f"{s}_{key}": r[key]
            for s, r in reports.items()
            for key in ("macro_accuracy", "recall", "confusion")
        },
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_classifier(args.out, model, provenance=provenance, fp16=args.fp16)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="prepared dataset folder (with manifest.json)")
    parser.add_argument(
        "--out", type=Path, default=None, help="classifier .safetensors to write (not with --cv)"
    )
    parser.add_argument(
        "--cv", type=int, default=0,
        help="K: kit-level cross-validation with K folds of the train split's kits (sorted, every K-th kit); "
        "the val kits are not used; writes no classifier",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=40, help="passes over the (class-balanced) train split")
    parser.add_argument("--batch-size", type=int, default=32, help="clips per step")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (one-cycle)")
    parser.add_argument("--seed", type=int, default=0, help="seed for init, sampling and augmentation")
    parser.add_argument("--predictions", type=Path, default=None, help="write per-clip predictions (JSON)")
    parser.add_argument(
        "--width", type=int, default=16, help="channels of the first conv block (doubles per block)"
    )
    parser.add_argument("--n-mels", type=int, default=64, help="mel bands of the front end")
    parser.add_argument("--top-db", type=float, default=100.0, help="log-mel floor below the loudest bin")
    parser.add_argument("--embed-dim", type=int, default=64, help="embedding size")
    parser.add_argument(
        "--pool", choices=("global", "time"), default="global",
        help="pool the last conv features over frequency and time (global) or over time only (time)",
    )  # fmt: skip
    parser.add_argument(
        "--subclasses", action=argparse.BooleanOptionalAction, default=False,
        help="train the head on kinds of instrument within a class (SUBCLASSES: drums, cymbals, shakers, ...)",
    )  # fmt: skip
    parser.add_argument(
        "--balance", choices=("class", "instrument"), default="class",
        help="sampling: classes equally likely (class), and instruments within a class too (instrument)",
    )  # fmt: skip
    parser.add_argument(
        "--device", default="cpu", help="torch device (results are only bit-reproducible on CPU)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--fp16", action=argparse.BooleanOptionalAction, default=True, help="store fp16 weights"
    )
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar"
    )
    args = parser.parse_args(argv)
    if (args.out is None) == (args.cv == 0):
        parser.error("give either --out FILE (train and ship) or --cv K (cross-validate), not both")

    commit = git_commit()  # the code that trains, before anything else can change the checkout
    if args.threads:
        torch.set_num_threads(args.threads)
    manifest_bytes = (args.data / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    classes = list(manifest["classes"])
    train_items = [i for i in manifest["items"] if i["split"] == "train" and i["class"] in classes]
    subclasses = sorted({subclass_name(i) for i in train_items}) if args.subclasses else []
    config = ClassifierConfig(
        class_names=tuple(classes),
        sample_rate=manifest["sample_rate"],
        length=manifest["length"],
        channels=tuple(args.width * 2**i for i in range(4)),
        pool=args.pool,
        embed_dim=args.embed_dim,
        n_mels=args.n_mels,
        top_db=args.top_db,
        subclass_of=tuple(classes.index(name.split("/")[0]) for name in subclasses),
    )
    if args.cv:
        return cross_validate(args.data, manifest, classes, subclasses, config, args)
    return train_and_save(
        args.data, manifest_bytes, manifest, classes, subclasses, config, args, argv, commit
    )


if __name__ == "__main__":
    sys.exit(main())
