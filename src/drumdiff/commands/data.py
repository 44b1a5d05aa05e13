"""`drumdiff data prepare` and `drumdiff data inspect`: thin argparse layer over the `drumdiff.data` package."""

from __future__ import annotations

import argparse
import json
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `data` with its sub-commands `prepare` and `inspect`."""
    parser = subparsers.add_parser(
        "data",
        help="import sample folders, Hydrogen, SoundFont and SFZ kits into a training dataset, and inspect it",
        description="Build and look at prepared datasets (see docs/data.md).",
    )
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    prepare = commands.add_parser(
        "prepare",
        help="convert folders of one-shots into DIR/<class>/*.flac + manifest.json + rejected.json",
        description=(
            "Walk SRC folders recursively and write one 24-bit FLAC per accepted file (onset at the start, "
            "fixed length, DC removed, normalized). Re-running into the same DIR re-encodes only what changed."
        ),
    )
    prepare.add_argument("sources", nargs="+", metavar="SRC", help="folders (or files) to import")
    prepare.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output dataset folder (required; created if needed)",
    )
    prepare.add_argument(
        "--classes",
        choices=("none", "folders", "hydrogen", "kits"),
        default="none",
        help="none: one class; folders: first folder level under SRC; hydrogen: drumkit.xml instrument names; "
        "kits: Hydrogen, SoundFont (.sf2/.sf3) and SFZ kits by their names and GM notes, other files by name "
        "(default: none)",
    )
    prepare.add_argument(
        "--mapping",
        metavar="FILE.json",
        help='with --classes hydrogen/kits: {"class": ["name part", ...]} (first match wins, "*" matches all; '
        "default: the built-in table of docs/data.md)",
    )
    prepare.add_argument(
        "--soundfont-presets",
        default="128:*",
        metavar="BANK:PROGRAM,...",
        help='with --classes kits: SoundFont presets to read, e.g. "0:0,128:*" or "*" (default: bank 128)',
    )
    prepare.add_argument(
        "--test-source",
        action="append",
        default=[],
        metavar="SRC",
        help="another source whose every item gets split test (a held-out source; repeatable; default: none)",
    )
    prepare.add_argument(
        "--license",
        action="append",
        default=[],
        metavar="PATH=TEXT",
        help="licence of every input under PATH, for the manifest's provenance (repeatable; longest PATH wins; "
        "default: the licence a kit states, else unknown)",
    )
    prepare.add_argument(
        "--near-duplicates",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="leave out clips nearly the same as a clip kept in another split (default: on)",
    )
    prepare.add_argument(
        "--normalize",
        choices=("peak", "lufs", "none"),
        default="peak",
        help="loudness normalization (default: peak)",
    )
    prepare.add_argument(
        "--peak-db",
        type=float,
        default=-1.0,
        metavar="DB",
        help="peak level in dBFS, above -60 and at most 0 (and the LUFS ceiling; default: -1)",
    )
    prepare.add_argument(
        "--lufs",
        type=float,
        default=-14.0,
        metavar="LUFS",
        help="target loudness with --normalize lufs, -50 to 0 (default: -14)",
    )
    prepare.add_argument("--length", type=int, metavar="N", help="clip length in samples (default: 32768)")
    prepare.add_argument("--sample-rate", type=int, metavar="HZ", help="output sample rate (default: 44100)")
    prepare.add_argument(
        "--workers",
        type=int,
        default=min(8, _cores()),
        metavar="K",
        help="worker processes, spawn start method, at most the CPU core count; 1: this process only "
        "(default: the CPU cores this process may use, at most 8)",
    )
    prepare.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show progress on stderr: a bar on a terminal, plain lines in a log (default: on)",
    )
    prepare.set_defaults(func=_prepare)

    inspect = commands.add_parser(
        "inspect",
        help="statistics per class and split, and a PNG grid of examples",
        description="Print counts, durations and loudness per class/split of a prepared DIR; draw a PNG grid.",
    )
    inspect.add_argument("dir", metavar="DIR", help="a folder written by `drumdiff data prepare`")
    inspect.add_argument("--png", metavar="FILE", help="where to save the grid (default: DIR/inspect.png)")
    inspect.add_argument(
        "--examples",
        type=int,
        default=4,
        metavar="N",
        help="examples per class in the grid (0: no PNG; default: 4)",
    )
    inspect.add_argument(
        "--json",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="print the statistics as JSON instead of a table (default: off)",
    )
    inspect.add_argument(
        "--label-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="list clips whose sound the drum classifier confidently puts in another class than their "
        "label (default: on; only the classifier's classes are checked)",
    )
    inspect.add_argument(
        "--confidence",
        type=float,
        default=0.9,
        metavar="P",
        help="classifier probability of the other class from which a clip is listed, 0.5 to <1 (default: 0.9)",
    )
    inspect.add_argument(
        "--classifier",
        metavar="FILE",
        help="drum classifier .safetensors for the label check (default: the one in the package)",
    )
    inspect.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show progress of the label check on stderr (default: on)",
    )
    inspect.set_defaults(func=_inspect)


def _prepare(args: argparse.Namespace) -> int:
    from drumdiff.data import PrepareSettings, load_mapping, parse_presets, prepare
    from drumdiff.errors import DrumdiffError

    if args.workers < 1:
        raise DrumdiffError(f"--workers must be at least 1, got {args.workers}")
    cores = _cores()
    if args.workers > cores:
        print(
            f"note: --workers {args.workers} is more than the {cores} CPU cores; using {cores}",
            file=sys.stderr,
        )
        args.workers = cores
    if args.mapping and args.classes not in ("hydrogen", "kits"):
        raise DrumdiffError("--mapping only applies with --classes hydrogen or kits")
    licenses = []
    for entry in args.license:
        path, sep, text = entry.partition("=")
        if not sep or not path or not text.strip():
            raise DrumdiffError(f"--license takes PATH=TEXT, got {entry!r}")
        licenses.append((path, text.strip()))
    defaults = PrepareSettings()
    settings = PrepareSettings(
        sample_rate=defaults.sample_rate if args.sample_rate is None else args.sample_rate,
        length=defaults.length if args.length is None else args.length,
        normalize=args.normalize,
        peak_db=args.peak_db,
        lufs=args.lufs,
    )
    report = prepare(
        args.sources,
        args.out,
        classes=args.classes,
        mapping=load_mapping(args.mapping) if args.mapping else None,
        settings=settings,
        workers=args.workers,
        progress=args.progress,
        soundfont_presets=parse_presets(args.soundfont_presets),
        test_sources=args.test_source,
        licenses=licenses,
        near_duplicates=args.near_duplicates,
    )
    print(report.summary())
    return 0


def _cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _inspect(args: argparse.Namespace) -> int:
    from drumdiff.data import inspect

    result = inspect(args.dir, png=args.png, examples=args.examples)
    labels = None
    if args.label_check:
        from drumdiff.evaluation.labels import check_labels

        labels = check_labels(
            args.dir, classifier=args.classifier, confidence=args.confidence, progress=args.progress
        )
    if args.json:
        if labels is not None:
            result["label_check"] = labels.to_dict()
        print(json.dumps(result, indent=1))
        return 0
    header = f"{'class':<12}{'split':<7}{'count':>6}{'dur med s':>10}{'dur max s':>10}{'cropped':>8}{'LUFS med':>9}"
    print(header + f"{'p10..p90':>14}")
    for row in result["stats"]:
        lufs = "" if row["lufs_median"] is None else f"{row['lufs_median']:.1f}"
        spread = "" if row["lufs_p10"] is None else f"{row['lufs_p10']:.1f}..{row['lufs_p90']:.1f}"
        print(
            f"{row['class']:<12}{row['split']:<7}{row['count']:>6}{row['duration_s_median']:>10.3f}"
            f"{row['duration_s_max']:>10.3f}{row['cropped']:>8}{lufs:>9}{spread:>14}"
        )
    if result["rejected"]:
        print("rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(result["rejected"].items())))
    if result["png"]:
        print(f"grid: {result['png']}")
    if labels is not None:
        _print_label_check(labels)
    return 0


def _print_label_check(labels) -> None:
    unchecked = "".join(f", {n} {name} not checked" for name, n in sorted(labels.unchecked.items()))
    print(
        f"label check: {len(labels.suspects)} of {labels.checked} clips sound like another class "
        f"(p >= {labels.confidence:g}){unchecked}"
    )
    if labels.suspects:
        print(f"{'label':<12}{'sounds like':<12}{'p':>6}  {'split':<6}file (source)")
    for s in labels.suspects:
        print(f"{s.label:<12}{s.predicted:<12}{s.probability:>6.2f}  {s.split:<6}{s.path} ({s.source})")
