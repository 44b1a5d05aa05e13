"""A second held-out test of the shipped classifier: LMMS's drum one-shots, which it never saw in training.

    apt-get install lmms-common
    python scripts/check_classifier_lmms.py [--samples /usr/share/lmms/samples/drums] [--json]

The classifier trains on Hydrogen kits only, so LMMS's sample library (another project, other authors and
other recordings) is an independent test set. Each file's class comes from its name (digits and underscores
dropped: `hihat_closed01` -> "hihat closed") through the very table `data prepare --classes hydrogen` uses;
names the table does not know (clav, wood, zap...) and unreadable files are listed and left out. The clips are then scored by
`drumdiff evaluate --classes` (audio fitted as `data prepare` fits it). Prints per-class accuracy, what each
class was taken for, and the macro accuracy; `--json` prints the class report instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from drumdiff.data import class_for_instrument, load_mapping
from drumdiff.evaluation import evaluate_folders

LMMS_DRUMS = Path("/usr/share/lmms/samples/drums")


def name_of(path: Path) -> str:
    """`hihat_closed01.ogg` -> "hihat closed": the instrument name the class table reads."""
    return path.stem.rstrip("0123456789").replace("_", " ").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=Path, default=LMMS_DRUMS, help="folder of LMMS drum samples")
    parser.add_argument("--json", action="store_true", help="print the class report as JSON")
    args = parser.parse_args(argv)
    files = sorted(p for p in args.samples.glob("*") if p.suffix.lower() in (".ogg", ".wav", ".flac"))
    if not files:
        print(f"no audio files in {args.samples} (apt-get install lmms-common)", file=sys.stderr)
        return 2
    mapping = load_mapping(None)
    unlabelled = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            label = class_for_instrument(name_of(path), mapping)
            if label is None:
                unlabelled.append(path.name)
                continue
            (Path(tmp) / label).mkdir(exist_ok=True)
            (Path(tmp) / label / path.name).symlink_to(path)
        full = evaluate_folders(tmp, tmp, classes=True)  # gen = ref: only the class report is used
    report = full["classes"]
    unreadable = sorted({Path(item["file"]).name for item in full["skipped"]})
    if args.json:
        print(json.dumps({"unlabelled": unlabelled, "unreadable": unreadable, **report}, indent=2))
        return 0
    print(f"{report['num_with_class']} labelled clips scored")
    print(f"left out, no class: {', '.join(unlabelled) or '-'}; unreadable: {', '.join(unreadable) or '-'}\n")
    print("| class | clips | accuracy | taken for |\n|---|---|---|---|")
    for name, entry in report["per_class"].items():
        taken = ", ".join(f"{k} {v}" for k, v in sorted(entry["predicted"].items(), key=lambda kv: -kv[1]))
        print(f"| {name} | {entry['num_gen']} | {entry['accuracy']} | {taken} |")
    print(f"\nmacro accuracy {report['macro_accuracy']}, accuracy {report['accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
