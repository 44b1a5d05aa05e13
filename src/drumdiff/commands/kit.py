"""`drumdiff kit OUT_DIR`: a kit of pads on the General MIDI drum map, for SFZ, Hydrogen and Decent Sampler.

The sampling and originality flags are generate's own definitions (`add_sampling_flags`,
`add_originality_flags`), and their checks,
the model and the seed are `commands.session.Session`'s, so `kit` and `generate` read and check them alike.
Everything about the kit itself (pads, round robins, out folder, formats) is checked before the model is
loaded; nothing is written until every take is sampled. Only the standard library and the torch-free
`drumdiff.kits.pads` / `formats` are imported at module level (`--help` stays instant).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from drumdiff.commands.generate import add_gate_flag, add_originality_flags, add_sampling_flags
from drumdiff.config import DEFAULT_EDIT_STEPS
from drumdiff.kits.formats import FORMATS, MAX_ROUND_ROBINS, SAMPLES
from drumdiff.kits.pads import DEFAULT_PADS, SHORT_NAMES

# = drumdiff.kits.make.DEFAULT_LOUDNESS_LUFS, DEFAULT_VARY_STRENGTH, PEAK_DBFS (tested); here so that
# `--help` does not import torch
LOUDNESS_LUFS = -20.0
VARY_STRENGTH = 0.2
PEAK_DBFS = -0.3


def register(subparsers: argparse._SubParsersAction) -> None:
    kit = subparsers.add_parser(
        "kit",
        help="generate a drum kit for samplers (SFZ, Hydrogen, Decent Sampler)",
        description="Generate a kit of pads on the General MIDI drum map, each pad from its class, with "
        "--round-robins takes per pad (variations of its first take), loudness matched across pads, and "
        "write it to OUT_DIR: samples/*.wav (24-bit), NAME.sfz, drumkit.xml + NAME.h2drumkit (Hydrogen), "
        "NAME.dspreset (Decent Sampler), kit.json and, with --plot, kit.png. Paths inside are relative: the "
        "folder can move.",
    )
    kit.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="the kit folder (new, or empty)")
    kit.add_argument(
        "--pads",
        default=None,
        help=f"comma-separated pads: names ({', '.join(SHORT_NAMES)}), General MIDI drum names or notes "
        f"35-87 (default {','.join(DEFAULT_PADS)})",
    )
    kit.add_argument(
        "--round-robins",
        type=int,
        default=1,
        metavar="K",
        help=f"takes per pad, 1 to {MAX_ROUND_ROBINS}: take 1 is generated, the others vary it (default 1)",
    )
    kit.add_argument(
        "--seed",
        type=int,
        default=None,
        help="kit seed, 0 to 2^64-1; each pad's seed is derived from it and its note (default: random, recorded)",
    )
    kit.add_argument(
        "--name", default="drumdiff kit", help="kit name shown by samplers (default 'drumdiff kit')"
    )
    kit.add_argument(
        "--formats",
        default="all",
        help=f"comma-separated: {', '.join(FORMATS)} or all; the WAV folder is always written (default all)",
    )
    kit.add_argument(
        "--loudness",
        type=float,
        default=LOUDNESS_LUFS,
        metavar="LUFS",
        help=f"integrated loudness of every pad, all takes of a pad with one gain; peaks stay at or below "
        f"{PEAK_DBFS} dBFS (default {LOUDNESS_LUFS:g})",
    )
    kit.add_argument(
        "--vary-strength",
        type=float,
        default=VARY_STRENGTH,
        help=f"how far round robins move from take 1, in (0, 1] (default {VARY_STRENGTH:g})",
    )
    add_gate_flag(kit)
    kit.add_argument(
        "--fade-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="fade the last MS milliseconds of every take out (default 0: tails untouched)",
    )
    kit.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier kit in OUT_DIR, one that holds nothing but its own files (default off)",
    )
    kit.add_argument(
        "--plot",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also write kit.png into the kit: a row per pad (note, name, class), the waveforms and "
        "spectrograms of its first takes (default off)",
    )
    add_sampling_flags(kit, default_steps=DEFAULT_EDIT_STEPS, default_n=1, clip_outputs=False)
    add_originality_flags(kit)
    kit.set_defaults(func=run_kit, class_name=None, sample_rate=None, format="wav24")  # what Session reads


def run_kit(args: argparse.Namespace) -> int:
    from drumdiff.commands.session import Session
    from drumdiff.kits.make import KitRequest, kit_steps, make_kit
    from drumdiff.progress import Progress

    started = time.perf_counter()
    request_fields = dict(
        out_dir=args.out_dir, pads=args.pads, round_robins=args.round_robins, name=args.name,
        formats=args.formats, vary_strength=args.vary_strength, loudness_lufs=args.loudness,
        fade_ms=args.fade_ms, overwrite=args.overwrite, plot=args.plot, gate=args.gate,
    )  # fmt: skip
    KitRequest.of(**request_fields)  # the kit's own values, before the model is loaded
    session = Session(args, "kit", n=1)  # sampling options, threads, seed, model
    assert session.seed is not None
    request = KitRequest.of(**request_fields, seed=session.seed)
    total = kit_steps(len(request.pads), request.round_robins, session.options, request.vary_strength)
    bar = Progress(total, desc="kit", unit="step") if args.progress else None
    try:
        kit = make_kit(
            session.model, request, options=session.options, originality=session.originality,
            max_similarity=session.max_similarity, progress=bar.update if bar else None,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    samples = [f for f in kit.files if f.startswith(f"{SAMPLES}/")]
    print(f"{kit.folder / SAMPLES}{os.sep} ({len(samples)} WAV file{'s' if len(samples) != 1 else ''})")
    for relative in (f for f in kit.files if f not in samples):
        print(kit.folder / relative)
    quiet = [
        p.pad.name for p in kit.pads if p.loudness_lufs is None or p.loudness_lufs < request.loudness_lufs - 1
    ]
    if quiet:
        print(
            f"warning: {', '.join(quiet)} stayed more than 1 LU below {request.loudness_lufs:g} LUFS to keep "
            f"peaks at or below {PEAK_DBFS} dBFS (kit.json lists each pad's loudness)",
            file=sys.stderr,
        )
    seconds = time.perf_counter() - started
    print(
        f"kit: {len(kit.pads)} pads x {request.round_robins} take(s) in {seconds:.1f} s, seed {request.seed} "
        f"-> {kit.folder}",
        file=sys.stderr,
    )
    return 0
