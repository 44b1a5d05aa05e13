"""`generate_kit`: sample a kit of pads, match their loudness, write the samples and the kit files.

    import drumdiff
    kit = drumdiff.generate_kit("model.safetensors", out_dir="my-kit", round_robins=3, seed=7)

Sampling. Pad p's first take is `generate` with seed `stable_seed("kit", SEED, NOTE)`; takes 2..K are `vary` of
that first take at `vary_strength` (small: the same drum hit K times, not K drums) with seeds
`stable_seed("kit-rr", SEED, NOTE) + i`. Pads of one family then swap first takes so that the notes mean
what they say: toms from dark to bright as the note rises, hi-hats from the shortest tail (pedal) to the
longest (open). Same model, seed, pads and options: the same files, bit for bit.

Level. Every pad is brought to `loudness_lufs` (BS.1770 integrated loudness, `drumdiff.audio.loudness_lufs`),
with one gain for all its takes (the energy mean of their loudness meets the target), so the takes keep
their differences; the gain never lifts a take's peak above PEAK_DBFS. A pad that cannot reach the target
under that ceiling stays quieter, and kit.json says by how much. Tails are faded only with `fade_ms > 0`.

Picture. With `plot=True` the kit folder also holds kit.png: a row per pad, its first takes' waveforms
above their spectrograms (`drumdiff.kits.picture`), drawn from the takes as written.

Writing. Everything is sampled first; then the kit is written into a hidden folder beside `out_dir` and
renamed onto it, so a kit folder is there whole or not at all. An existing `out_dir` must be empty, or,
with `overwrite=True`, a drumdiff kit holding only the files its kit.json lists (nothing of yours is lost).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from drumdiff import audio as audio_io
from drumdiff.errors import DrumdiffError
from drumdiff.files import file_digest, write_json
from drumdiff.kits.folder import KIT_FORMAT, KIT_VERSION, MANIFEST, check_out_dir, staged_folder
from drumdiff.kits.formats import (
    SAMPLES,
    PadFiles,
    check_name,
    check_round_robins,
    kit_stem,
    parse_formats,
    write_formats,
)
from drumdiff.kits.pads import Pad, parse_pads
from drumdiff.kits.picture import PICTURE, save_kit_png
from drumdiff.kits.takes import PEAK_DBFS, fade_out, level, order_families, sample_takes
from drumdiff.pipeline import DEFAULT_EDIT_STEPS, DrumPipeline, SamplingOptions, load_model, vary_steps
from drumdiff.postprocess import gate_tail

if TYPE_CHECKING:
    from drumdiff.evaluation.originality import OriginalityCheck

# -20 LUFS: a level most one-shots reach under the peak ceiling. Measured on the 854 one-shots of Debian's
# hydrogen-drumkits cut to a model clip (0.74 s) and peaking at -0.3 dBFS: median -17.5 LUFS, three in four
# at -20 or louder. The peakiest quarter (sharp clicks, which 400 ms loudness blocks underrate) stays quieter.
DEFAULT_LOUDNESS_LUFS = -20.0
DEFAULT_VARY_STRENGTH = 0.2  # round robins: enough to vary the hit, too little to change the drum
LOUDNESS_RANGE = (-60.0, 0.0)


@dataclass(frozen=True)
class KitTake:
    """One sample file of a pad: take 1 is generated, takes 2.. are variations of take 1."""

    take: int
    file: str  # relative to the kit folder: "samples/36_kick_1.wav"
    operation: str  # "generate" or "vary"
    seed: int
    loudness_lufs: float | None  # after the pad's gain; None for digital silence
    peak_dbfs: float
    nearest_training_clip: dict[str, Any] | None = None  # with an originality index: similarity, clip, ...
    redrawn_from_seeds: tuple[int, ...] = ()  # take 1 only: seeds whose draws were near-copies


@dataclass(frozen=True)
class KitPad:
    """A pad of a written kit: what was asked for, the model's class it was sampled from, its level."""

    pad: Pad
    class_name: str  # the model's own spelling of the pad's class
    gain_db: float
    loudness_lufs: float | None  # the energy mean of its takes, after the gain
    takes: tuple[KitTake, ...]


@dataclass(frozen=True)
class Kit:
    """A written kit folder: its pads, takes and every file in it (relative paths), and kit.json's data."""

    folder: Path
    name: str
    stem: str
    pads: tuple[KitPad, ...]
    files: tuple[str, ...]
    manifest: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class KitRequest:
    """Everything `generate_kit` checks before sampling: one check, with a DrumdiffError naming the value."""

    out_dir: Path
    pads: list[Pad]
    round_robins: int
    seed: int
    name: str
    stem: str
    formats: list[str]
    vary_strength: float
    loudness_lufs: float
    fade_ms: float
    overwrite: bool
    plot: bool = False  # also write kit.png (drumdiff.kits.picture)
    gate: bool = False  # fade every take out where it meets its noise floor (drumdiff.postprocess)

    @classmethod
    def of(
        cls,
        *,
        out_dir: str | os.PathLike,
        pads: str | Iterable[str | int] | None = None,
        round_robins: int = 1,
        seed: int = 0,
        name: str = "drumdiff kit",
        formats: str | Iterable[str] | None = None,
        vary_strength: float = DEFAULT_VARY_STRENGTH,
        loudness_lufs: float = DEFAULT_LOUDNESS_LUFS,
        fade_ms: float = 0.0,
        overwrite: bool = False,
        plot: bool = False,
        gate: bool = False,
    ) -> KitRequest:
        from drumdiff.pipeline import check_seed

        check_seed(seed)
        check_name(name)
        if not (math.isfinite(vary_strength) and 0 < vary_strength <= 1):
            raise DrumdiffError(f"vary strength must be in (0, 1], got {vary_strength}")
        low, high = LOUDNESS_RANGE
        if not (math.isfinite(loudness_lufs) and low <= loudness_lufs <= high):
            raise DrumdiffError(f"loudness must be from {low:g} to {high:g} LUFS, got {loudness_lufs}")
        if not (math.isfinite(fade_ms) and fade_ms >= 0):
            raise DrumdiffError(f"fade must be a number of milliseconds of at least 0, got {fade_ms}")
        request = cls(
            out_dir=Path(out_dir),
            pads=parse_pads(pads),
            round_robins=check_round_robins(round_robins),
            seed=seed,
            name=name,
            stem=kit_stem(name),
            formats=parse_formats(formats),
            vary_strength=float(vary_strength),
            loudness_lufs=float(loudness_lufs),
            fade_ms=float(fade_ms),
            overwrite=overwrite,
            plot=bool(plot),
            gate=bool(gate),
        )
        check_out_dir(request.out_dir, overwrite=overwrite)
        return request


def generate_kit(
    model: DrumPipeline | str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike,
    pads: str | Iterable[str | int] | None = None,
    round_robins: int = 1,
    seed: int = 0,
    name: str = "drumdiff kit",
    formats: str | Iterable[str] | None = None,
    options: SamplingOptions | None = None,
    vary_strength: float = DEFAULT_VARY_STRENGTH,
    loudness_lufs: float = DEFAULT_LOUDNESS_LUFS,
    fade_ms: float = 0.0,
    overwrite: bool = False,
    plot: bool = False,
    gate: bool = False,
    index: str | os.PathLike | None = None,
    max_similarity: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> Kit:
    """Generate a kit of pads on the General MIDI drum map and write it to `out_dir` (see the module doc).

    model: a pipeline, or a model name or path (None: the shipped model). pads: names, GM names or notes
    (`"kick,snare,42"`; default DEFAULT_PADS). round_robins: takes per pad, 1-16. formats: some of
    wav, sfz, hydrogen, dspreset (default all). options: how to sample. plot: also write kit.png, every
    pad's waveforms and spectrograms (one of the kit's files, listed in kit.json). progress(steps) is
    called after each network evaluation (`kit_steps` counts them). index: the model's originality index
    (default: the one beside the model file, if any); with one, every take records its nearest training
    clip, and max_similarity re-draws a pad whose first take is closer than that. Returns the written `Kit`.
    """
    request = KitRequest.of(
        out_dir=out_dir, pads=pads, round_robins=round_robins, seed=seed, name=name, formats=formats,
        vary_strength=vary_strength, loudness_lufs=loudness_lufs, fade_ms=fade_ms, overwrite=overwrite,
        plot=plot, gate=gate,
    )  # fmt: skip
    options = options or SamplingOptions(steps=DEFAULT_EDIT_STEPS)  # as `drumdiff kit`
    pipeline = model if isinstance(model, DrumPipeline) else load_model(model)
    originality = None
    if pipeline.path is not None or index is not None:
        from drumdiff.evaluation.originality import open_check, open_for_model

        originality = (
            open_check(index) if pipeline.path is None else open_for_model(pipeline.path, index=index)
        )
    if max_similarity is not None and originality is None:
        raise DrumdiffError(
            "max_similarity needs an originality index: none was given or found beside the model"
        )
    return make_kit(
        pipeline, request, options=options, originality=originality, max_similarity=max_similarity,
        progress=progress,
    )  # fmt: skip


def make_kit(
    pipeline: DrumPipeline,
    request: KitRequest,
    *,
    options: SamplingOptions,
    originality: OriginalityCheck | None = None,
    max_similarity: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> Kit:
    """Sample, level and write a checked request (`generate_kit` without the checks). With `originality`,
    each take's nearest training clip is recorded; a pad whose first take is above `max_similarity` is
    drawn again from seeds `stable_seed("kit", SEED, NOTE, attempt)`, up to `originality.MAX_REDRAWS` times (then the least
    similar draw is kept)."""
    if max_similarity is not None and not 0 < max_similarity <= 1:
        raise DrumdiffError(f"max similarity must be in (0, 1], got {max_similarity}")
    classes = [pad_class(pipeline, pad) for pad in request.pads]
    # Every pad has a class: the default guidance applies to all of them, and kit.json records the scale.
    options = SamplingOptions.of(options, guidance=pipeline.guidance_for(classes[0], options))
    fade = round(request.fade_ms * pipeline.sample_rate / 1000)
    if fade > pipeline.length:
        raise DrumdiffError(
            f"fade of {request.fade_ms:g} ms is longer than a clip "
            f"({pipeline.length / pipeline.sample_rate * 1000:.1f} ms)"
        )
    takes, seeds = sample_takes(
        pipeline, request.pads, classes, kit_seed=request.seed, round_robins=request.round_robins,
        vary_strength=request.vary_strength, options=options, originality=originality,
        max_similarity=max_similarity, progress=progress,
    )  # fmt: skip
    takes, seeds = order_families(request.pads, takes, seeds, sample_rate=pipeline.sample_rate)
    if request.gate:
        takes = [gate_tail(clips, pipeline.sample_rate) for clips in takes]
    if fade:
        takes = [fade_out(clips, fade) for clips in takes]
    levelled = [level(clips, request.loudness_lufs, pipeline.sample_rate) for clips in takes]
    if originality is not None:  # of the takes as written
        for (clips, _), used in zip(levelled, seeds, strict=True):
            used["nearest"] = originality.check(clips, pipeline.sample_rate)
    return _write_kit(pipeline, request, classes, levelled, seeds, options=options)


def pad_class(pipeline: DrumPipeline, pad: Pad) -> str:
    """The model's class for a pad, or a DrumdiffError naming the pad and the classes the model knows."""
    try:
        name = pipeline.resolve_class(pad.class_name)
    except DrumdiffError as error:
        raise DrumdiffError(
            f"pad {pad.name} (note {pad.note}) needs class {pad.class_name}: {error}"
        ) from None
    if name is None or not pipeline.config.conditional:
        raise DrumdiffError(
            f"pad {pad.name} (note {pad.note}) needs class {pad.class_name}, and this model is unconditional; "
            "a kit needs a model trained with classes"
        )
    return name


def kit_steps(pads: int, round_robins: int, options: SamplingOptions, vary_strength: float) -> int:
    """Network evaluations of a kit: each pad's first take, then its variations in batches."""
    batches = -(-(round_robins - 1) // options.batch_size)
    return pads * (options.steps + batches * vary_steps(options.steps, vary_strength))


# ---------------------------------------------------------------------------------------------- writing


def _write_kit(
    pipeline: DrumPipeline,
    request: KitRequest,
    classes: list[str],
    levelled: list[tuple[Tensor, float]],
    seeds: list[dict[str, int]],
    *,
    options: SamplingOptions,
) -> Kit:
    """Write samples, kit files and kit.json into a hidden folder beside `out_dir`, then rename it there."""
    base = _base_record(pipeline, request, options=options)
    with staged_folder(request.out_dir) as staging:
        (staging / SAMPLES).mkdir()
        pads = [
            _write_pad(staging, pipeline.sample_rate, base, pad, class_name, clips, gain_db, used)
            for pad, class_name, (clips, gain_db), used in zip(
                request.pads, classes, levelled, seeds, strict=True
            )
        ]
        files = [t.file for p in pads for t in p.takes]
        files += write_formats(
            staging, formats=request.formats, stem=request.stem, name=request.name,
            pads=[PadFiles(p.pad, tuple(t.file for t in p.takes)) for p in pads],
            info=_info(pipeline, request), release_s=pipeline.length / pipeline.sample_rate,
        )  # fmt: skip
        if request.plot:
            save_kit_png(
                staging / PICTURE, request.pads, classes, [clips for clips, _ in levelled],
                sample_rate=pipeline.sample_rate,
            )  # fmt: skip
            files.append(PICTURE)
        manifest = _manifest(pipeline, request, pads, files, model=base["model"], options=options)
        write_json(staging / MANIFEST, manifest)
    return Kit(request.out_dir, request.name, request.stem, tuple(pads), (*files, MANIFEST), manifest)


def _write_pad(
    folder: Path,
    sample_rate: int,
    base: dict[str, Any],
    pad: Pad,
    class_name: str,
    clips: Tensor,
    gain_db: float,
    seeds: dict[str, int],
) -> KitPad:
    """Write a pad's takes [K, C, T] as samples/NOTE_NAME_TAKE.wav and describe them."""
    takes = []
    for index, clip in enumerate(clips):
        loudness = audio_io.loudness_lufs(clip, sample_rate)
        take = KitTake(
            take=index + 1,
            file=f"{SAMPLES}/{pad.note}_{pad.name}_{index + 1}.wav",
            operation="generate" if index == 0 else "vary",
            seed=seeds["seed"] if index == 0 else seeds["vary_seed"] + index - 1,
            loudness_lufs=round(loudness, 3) if math.isfinite(loudness) else None,
            peak_dbfs=round(audio_io.peak_db(clip), 3),
            nearest_training_clip=seeds["nearest"][index] if "nearest" in seeds else None,
            redrawn_from_seeds=seeds["redrawn_from_seeds"] if index == 0 else (),
        )
        record = {**base, "pad": pad.name, "note": pad.note, "class_name": class_name, "take": take.take,
                  "operation": take.operation, "seed": take.seed}  # fmt: skip
        if take.operation == "vary":
            record["strength"] = base["vary_strength"]
        _write_sample(folder / take.file, clip, sample_rate, record)
        takes.append(take)
    return KitPad(pad, class_name, round(gain_db, 3), _mean_loudness(takes), tuple(takes))


def _write_sample(path: Path, clip: Tensor, sample_rate: int, record: dict[str, Any]) -> Path:
    """Write one take as a 24-bit WAV with its provenance tags (`record`: the take's generation record)."""
    from drumdiff.tags import provenance_tags

    return audio_io.write(
        path, clip, sample_rate, format="wav24", tags=provenance_tags(record, stem=path.stem)
    )


def _base_record(pipeline: DrumPipeline, request: KitRequest, *, options: SamplingOptions) -> dict[str, Any]:
    """What every take's provenance shares: the kit, the model and how it was sampled."""
    from drumdiff import __version__

    path = pipeline.path
    return {
        "kit": request.name,
        "model": {
            "path": str(path) if path is not None else None,
            "sha256": file_digest(path) if path is not None else None,
        },
        "sampler": options.sampler,
        "schedule": options.schedule,
        "steps": options.steps,
        "guidance": options.guidance,
        "vary_strength": request.vary_strength,
        "kit_seed": request.seed,
        "drumdiff_version": __version__,
    }


def _mean_loudness(takes: list[KitTake]) -> float | None:
    heard = [t.loudness_lufs for t in takes if t.loudness_lufs is not None]
    if not heard:
        return None
    return round(10 * math.log10(sum(10 ** (v / 10) for v in heard) / len(heard)), 3)


def _info(pipeline: DrumPipeline, request: KitRequest) -> str:
    from drumdiff import __version__

    model = pipeline.path.name if pipeline.path is not None else "a model in memory"
    return (
        f"Drum kit made by drumdiff {__version__} from {model}, seed {request.seed}, "
        f"{len(request.pads)} pads on the General MIDI drum map, {request.round_robins} take(s) each "
        f"(kit.json records how)."
    )


def _manifest(
    pipeline: DrumPipeline,
    request: KitRequest,
    pads: list[KitPad],
    files: list[str],
    *,
    model: dict[str, Any],
    options: SamplingOptions,
) -> dict[str, Any]:
    from drumdiff import __version__

    return {
        "format": KIT_FORMAT,
        "version": KIT_VERSION,
        "name": request.name,
        "seed": request.seed,
        "round_robins": request.round_robins,
        "vary_strength": request.vary_strength,
        "loudness_target_lufs": request.loudness_lufs,
        "peak_ceiling_dbfs": PEAK_DBFS,
        "fade_ms": request.fade_ms,
        "gate": request.gate,
        "sample_rate": pipeline.sample_rate,
        "channels": pipeline.channels,
        "length": pipeline.length,
        "formats": request.formats,
        "model": model,
        "sampling": {
            "sampler": options.sampler,
            "steps": options.steps,
            "schedule": options.schedule,
            "guidance": options.guidance,
            "batch_size": options.batch_size,
        },
        "device": str(pipeline.device),
        "drumdiff_version": __version__,
        "torch_version": torch.__version__,
        "pads": [
            {
                "note": p.pad.note,
                "name": p.pad.name,
                "title": p.pad.title,
                "gm_name": p.pad.gm_name,
                "class": p.class_name,
                "gain_db": p.gain_db,
                "loudness_lufs": p.loudness_lufs,
                "takes": [vars(t) for t in p.takes],
            }
            for p in pads
        ],
        "files": sorted(files),
    }
