"""The requests the page makes, without Gradio: sample with the pipeline, write fresh files, return clips.

A `Studio` holds the model (the page's closure holds the Studio: no module globals). Each request writes its
WAVs (24-bit, with the same sidecar JSON records as `drumdiff generate`), one waveform + spectrogram PNG per
clip and a zip of the WAVs into a fresh folder of the workspace; a kit request writes a whole kit folder there
(`drumdiff.generate_kit`, with its picture) and a zip of it. One request samples at a time (a lock, on top
of the Gradio queue's limit), so concurrent users wait instead of racing on the network.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from drumdiff.app.session import Clip, Workspace, new_clip, zip_clips, zip_folder
from drumdiff.errors import DrumdiffError
from drumdiff.pipeline import DrumPipeline, SamplingOptions, vary_steps

if TYPE_CHECKING:
    from drumdiff.kits.make import Kit

# progress(done, total, what): called as sampling steps and pictures get done.
Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Result:
    """What one request made: the clips (WAV and PNG written), a zip of them and a one-line summary."""

    clips: list[Clip]
    zip_path: Any  # Path
    message: str


@dataclass(frozen=True)
class KitResult:
    """What one kit request made: the kit folder (`kit.folder`), its picture, a zip of the whole folder, each
    pad's first take as (label, WAV) in kit order, and a one-line summary."""

    kit: Kit
    picture: Path
    zip_path: Path
    first_takes: list[tuple[str, Path]]
    message: str


class Studio:
    """The model and the workspace behind every request of one server."""

    def __init__(self, model: DrumPipeline, workspace: Workspace) -> None:
        from drumdiff.files import file_digest

        self.model = model
        self.workspace = workspace
        self.model_sha256 = file_digest(model.path) if model.path is not None else None
        self._lock = threading.Lock()

    # -- the four operations
    def generate(
        self,
        *,
        class_name: str | None,
        n: int,
        seed: int | None,
        options: SamplingOptions,
        progress: Report | None = None,
    ) -> Result:
        """N fresh clips; clip i uses seed SEED + i."""
        started = time.perf_counter()
        seed = _seed(seed)
        tick = _steps(progress, _batches(n, options.batch_size) * options.steps)
        with self._lock:
            audio = self.model.generate(n=n, seed=seed, class_name=class_name, options=options, progress=tick)
        stems = self._seeded(self._label(class_name), seed, n)
        return self._finish(
            "generate",
            audio,
            **stems,
            class_name=class_name,
            options=options,
            progress=progress,
            seed=seed,
            started=started,
        )

    def vary(
        self,
        clip: Tensor,
        *,
        source: str,
        strength: float,
        class_name: str | None,
        n: int,
        seed: int | None,
        options: SamplingOptions,
        progress: Report | None = None,
    ) -> Result:
        """N variations of `clip` [C, T] (SDEdit to t = strength)."""
        started = time.perf_counter()
        if not 0 < strength <= 1:
            raise DrumdiffError(f"strength must be in (0, 1], got {strength}")
        seed = _seed(seed)
        tick = _steps(progress, _batches(n, options.batch_size) * vary_steps(options.steps, strength))
        with self._lock:
            audio = self.model.vary(
                clip, strength=strength, n=n, seed=seed, class_name=class_name, options=options, progress=tick
            )
        stems = self._seeded(f"{source}_vary{strength:g}", seed, n, input=source, strength=strength)
        return self._finish(
            "vary",
            audio,
            **stems,
            class_name=class_name,
            options=options,
            progress=progress,
            seed=seed,
            started=started,
        )

    def inpaint(
        self,
        clip: Tensor,
        *,
        source: str,
        keep_ms: float,
        class_name: str | None,
        n: int,
        seed: int | None,
        options: SamplingOptions,
        progress: Report | None = None,
    ) -> Result:
        """N clips that keep the first `keep_ms` of `clip` [C, T] and regenerate the rest."""
        started = time.perf_counter()
        keep = round(keep_ms * self.model.sample_rate / 1000)
        if not (math.isfinite(keep_ms) and 0 < keep < self.model.length):
            whole = 1000 * self.model.length / self.model.sample_rate
            raise DrumdiffError(f"keep must be between 0 and {whole:.0f} ms, got {keep_ms:g}")
        seed = _seed(seed)
        tick = _steps(progress, _batches(n, options.batch_size) * options.steps)
        with self._lock:
            audio = self.model.inpaint(
                clip, keep=(0, keep), n=n, seed=seed, class_name=class_name, options=options, progress=tick
            )
        stems = self._seeded(f"{source}_inpaint", seed, n, input=source, keep_ms=keep_ms)
        return self._finish(
            "inpaint",
            audio,
            **stems,
            class_name=class_name,
            options=options,
            progress=progress,
            seed=seed,
            started=started,
        )

    def interpolate(
        self,
        a: Tensor,
        b: Tensor,
        *,
        sources: tuple[str, str],
        frames: int,
        class_name: str | None,
        options: SamplingOptions,
        progress: Report | None = None,
    ) -> Result:
        """`frames` clips from a to b, endpoints included (deterministic DDIM: no seed)."""
        started = time.perf_counter()
        if frames < 2:
            raise DrumdiffError(f"frames must be at least 2, got {frames}")
        tick = _steps(progress, (options.steps - 1) + _batches(frames, options.batch_size) * options.steps)
        with self._lock:
            audio = self.model.interpolate(
                a, b, frames=frames, class_name=class_name, options=options, progress=tick
            )
        pair = f"{sources[0]}_to_{sources[1]}"
        stems = [f"{pair}_{i:03d}" for i in range(frames)]
        extra = [{"index": i, "weight": i / (frames - 1), "inputs": list(sources)} for i in range(frames)]
        return self._finish(
            "interpolate",
            audio,
            stems=stems,
            extra=extra,
            class_name=class_name,
            options=options,
            progress=progress,
            seed=None,
            started=started,
        )

    def kit(
        self,
        *,
        pads: Sequence[str],
        round_robins: int,
        seed: int | None,
        name: str,
        loudness_lufs: float,
        options: SamplingOptions,
        progress: Report | None = None,
    ) -> KitResult:
        """A kit of `pads` (short names, GM names or notes) as `drumdiff kit` writes it, with its picture,
        in a fresh request folder, and a zip of it beside the kit folder."""
        from drumdiff.kits.formats import kit_stem
        from drumdiff.kits.make import PEAK_DBFS, KitRequest, generate_kit, kit_steps
        from drumdiff.kits.picture import PICTURE

        started = time.perf_counter()
        seed = _seed(seed)
        folder = self.workspace.new_request("kit")
        fields = dict(
            pads=list(pads), round_robins=round_robins, seed=seed, name=name, loudness_lufs=loudness_lufs,
            plot=True,
        )  # fmt: skip
        try:
            out_dir = folder / kit_stem(name)
            request = KitRequest.of(out_dir=out_dir, **fields)  # every value checked before sampling
            tick = _steps(
                progress, kit_steps(len(request.pads), request.round_robins, options, request.vary_strength)
            )
            with self._lock:
                kit = generate_kit(self.model, out_dir=out_dir, **fields, options=options, progress=tick)
        except BaseException:
            with contextlib.suppress(OSError):
                folder.rmdir()  # nothing was written: the kit folder is all or nothing
            raise
        zip_path = zip_folder(folder / f"{kit.stem}.zip", kit.folder, kit.files)
        first = [(f"{p.pad.note} {p.pad.name}", kit.folder / p.takes[0].file) for p in kit.pads]
        below = [
            p for p in kit.pads if p.loudness_lufs is None or p.loudness_lufs < request.loudness_lufs - 1
        ]
        quiet = ", ".join(p.pad.name for p in below)  # as `drumdiff kit` warns
        note = f"; {quiet} stayed quieter, to keep peaks at or below {PEAK_DBFS} dBFS" if quiet else ""
        message = (
            f"kit: {len(kit.pads)} pads x {round_robins} take(s), seed {seed}, in "
            f"{time.perf_counter() - started:.1f} s{note}"
        )
        return KitResult(kit, kit.folder / PICTURE, zip_path, first, message)

    # -- shared
    def _finish(
        self,
        operation: str,
        audio: Tensor,
        *,
        stems: list[str],
        extra: list[dict[str, Any]],
        class_name: str | None,
        options: SamplingOptions,
        progress: Report | None,
        seed: int | None,
        started: float,
    ) -> Result:
        """Write the WAVs + records, one picture per clip and the zip, in a fresh request folder."""
        from drumdiff import __version__
        from drumdiff.outputs import safe_label, write_clips
        from drumdiff.plots import save_clips_png

        folder = self.workspace.new_request(operation)
        base = {
            "operation": operation,
            "model": {"path": str(self.model.path), "sha256": self.model_sha256},
            "class_name": class_name,
            "sampler": options.sampler if operation != "interpolate" else "ddim",
            "schedule": options.schedule,
            "steps": options.steps,
            "guidance": options.guidance,
            "n": len(audio),
            "sample_rate": self.model.sample_rate,
            "format": "wav24",
            "request_seed": seed,
            "made_by": "drumdiff app",
            "drumdiff_version": __version__,
            "torch_version": torch.__version__,
        }
        stems = [safe_label(s) for s in stems]
        records = [{**base, **e} for e in extra]
        paths = write_clips(
            folder, audio, stems=stems, records=records, sample_rate=self.model.sample_rate, format="wav24"
        )
        clips = []
        for i, (clip, path, record) in enumerate(zip(audio, paths, records, strict=True)):
            if progress is not None:
                progress(i, len(paths), "drawing")
            save_clips_png(
                path.with_suffix(".png"), clip[None], sample_rate=self.model.sample_rate, titles=[path.stem]
            )
            clips.append(
                new_clip(
                    clip,
                    sample_rate=self.model.sample_rate,
                    label=path.stem,
                    origin="generated",
                    class_name=class_name,
                    path=path,
                    record=record,
                )
            )
        zip_path = zip_clips(folder / f"drumdiff-{operation}-{folder.name[:5]}.zip", clips, self.workspace)
        seconds = time.perf_counter() - started
        seeded = f", seed {seed}" if seed is not None else ""
        message = f"{operation}: {len(clips)} clip(s){seeded}, in {seconds:.1f} s"
        return Result(clips=clips, zip_path=zip_path, message=message)

    def _seeded(self, stem: str, seed: int, n: int, **fields: Any) -> dict[str, list]:
        """File stems `STEM_seedS_III` and record fields for n clips seeded SEED + i (as the CLI names them)."""
        seeds = [seed + i for i in range(n)]
        return {
            "stems": [f"{stem}_seed{s}_{i:03d}" for i, s in enumerate(seeds)],
            "extra": [{"index": i, "seed": s, **fields} for i, s in enumerate(seeds)],
        }

    def _label(self, class_name: str | None) -> str:
        if class_name:
            return class_name
        names = self.model.class_names
        return names[0] if len(names) == 1 else "drum"


def random_seed() -> int:
    """A fresh seed for a request that did not give one."""
    return int(torch.randint(0, 2**31 - 1, ()).item())


def _seed(seed: int | None) -> int:
    if seed is None:
        return random_seed()
    if not isinstance(seed, int) or seed < 0:
        raise DrumdiffError(f"seed must be a whole number of at least 0, got {seed!r}")
    return seed


def _batches(n: int, size: int) -> int:
    return -(-n // size)


def _steps(progress: Report | None, total: int):
    """The pipeline's `progress(k)` callback, turned into progress(done, total, "sampling")."""
    if progress is None:
        return None
    done = 0

    def tick(k: int) -> None:
        nonlocal done
        done += k
        progress(done, total, "sampling")

    progress(0, total, "sampling")
    return tick
