"""`drumdiff evaluate GEN_DIR REF_DIR`: compare generated clips with real ones (docs/evaluation.md)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` sub-command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score generated clips against real ones (FD, KID, class accuracy, artifacts, variety)",
        description=(
            "Score the clips in GEN_DIR against the clips in REF_DIR with the shipped drum classifier: "
            "Frechet distance and KID on its embeddings, class accuracy and an Inception-style score "
            "(--classes), artifacts measured on the raw files, variety, and with --train the nearest "
            "training clip of each generated clip. Unreadable files are reported and skipped. "
            "Metric names: docs/evaluation.md."
        ),
    )
    parser.add_argument("gen_dir", metavar="GEN_DIR", help="folder of generated clips (searched recursively)")
    parser.add_argument(
        "ref_dir", metavar="REF_DIR", help="folder of reference clips, or a prepared dataset (manifest.json)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a summary (default: summary)"
    )
    parser.add_argument(
        "--train", metavar="DIR", default=None, help="training set: flag near-copies of it (default: none)"
    )
    parser.add_argument(
        "--plot", metavar="PNG", default=None, help="write spectrogram grids and metric bars (default: none)"
    )
    parser.add_argument(
        "--classes",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="per-class figures: accuracy against the requested class, Inception score, per-class FD/KID "
        "(default off)",
    )
    parser.add_argument(
        "--ref-split",
        choices=(
            "all",
            "train",
            "val",
            "test",
        ),  # drumdiff.data.manifest.SPLITS (not imported: --help stays light)
        default="all",
        help="which split of a prepared REF_DIR to use (default: all)",
    )
    parser.add_argument(
        "--train-split",
        choices=(
            "all",
            "train",
            "val",
            "test",
        ),  # drumdiff.data.manifest.SPLITS (not imported: --help stays light)
        default="train",
        help="which split of a prepared --train DIR to use (default: train)",
    )
    parser.add_argument(
        "--classifier", metavar="FILE", default=None, help="classifier file (default: shipped)"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bars on stderr, on a terminal only (default on)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of `drumdiff evaluate`: the report as a summary (or JSON) on stdout, the plot with --plot."""
    from pathlib import Path

    from drumdiff.errors import DrumdiffError
    from drumdiff.evaluation import evaluate_folders, format_summary, save_plot, to_json

    if args.plot and not Path(args.plot).resolve().parent.is_dir():  # say so before minutes of work
        raise DrumdiffError(f"--plot {args.plot}: {Path(args.plot).parent} is not an existing folder")
    report = evaluate_folders(
        args.gen_dir,
        args.ref_dir,
        train_dir=args.train,
        classes=args.classes,
        ref_split=args.ref_split,
        train_split=args.train_split,
        classifier=args.classifier,
        progress=args.progress and sys.stderr.isatty(),
        log=lambda line: print(f"drumdiff evaluate: {line}", file=sys.stderr),
    )
    if args.plot:
        save_plot(args.plot, report)
    if args.json:
        print(to_json(report))
    else:
        print(format_summary(report))
        if args.plot:
            print(f"wrote {args.plot}")
    return 0
