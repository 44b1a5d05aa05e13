"""One sampling request of `drumdiff generate | vary | interpolate | inpaint`: what every handler does around
the sampling itself.

Every value is checked, the model loaded and the inputs read before `--out` is created; then each batch is
written as soon as it is sampled (all or nothing per batch, see `drumdiff.outputs`), so Ctrl-C or a full disk
keeps every finished batch, recorded, and a request that fails before writing anything leaves no folder behind.
With an originality index (generate only) each clip's record names its nearest training clip, and
`--max-similarity` re-draws near-copies with recorded seeds; `drumdiff.evaluation.originality` and the
classifier are imported only when there is an index. Only the standard library is imported at module level
(`--help` stays instant).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MIN_RATE, MAX_RATE = 8000, 192000  # = drumdiff.audio.MIN_SAMPLE_RATE, MAX_SAMPLE_RATE (tested)
MAX_CLIPS = 100_000  # per request: more is a typo (and days of sampling); split it into several requests
MAX_FRAMES = 1000  # interpolate holds every frame in memory
MANY_STEPS = 1000  # warn above this: the samplers have converged long before
MAX_STEPS = 100_000  # refuse above this: hours per clip, surely a typo
PLOT_CLIPS = 32  # --plot draws the first clips of a request
INDEX_SUFFIX = ".index.safetensors"  # = drumdiff.evaluation.originality.INDEX_SUFFIX (tested)
NEAR_COPY = 0.99  # = drumdiff.evaluation.originality.DEFAULT_MAX_SIMILARITY (tested): warned about

# make_batch(first, count, tick) -> clips [count, C, T]: clips first .. first + count - 1 of the request.
MakeBatch = Callable[[int, int, Any], Any]
# redraw(seed) -> one clip [C, T] drawn like the request's clips but from that seed (--max-similarity).
Redraw = Callable[[int], Any]


class Session:
    """What every handler does around the sampling itself: checks, model, folder, progress, writing, summary."""

    def __init__(self, args: argparse.Namespace, operation: str, *, n: int) -> None:
        import torch

        from drumdiff.errors import DrumdiffError
        from drumdiff.files import file_digest
        from drumdiff.pipeline import SamplingOptions, check_seed, load_model

        self.args, self.operation, self.n = args, operation, n
        # Every value is checked here, before anything is loaded or written; interpolate has no
        # --sampler/--schedule/--seed.
        self.options = SamplingOptions.of(
            steps=args.steps,
            guidance=args.guidance,
            batch_size=args.batch_size,
            **{name: getattr(args, name) for name in ("sampler", "schedule") if hasattr(args, name)},
        )
        if self.options.steps > MAX_STEPS:
            raise DrumdiffError(f"--steps must be from 1 to {MAX_STEPS}, got {self.options.steps}")
        if args.sample_rate is not None and not MIN_RATE <= args.sample_rate <= MAX_RATE:
            raise DrumdiffError(
                f"--sample-rate must be from {MIN_RATE} to {MAX_RATE} Hz, got {args.sample_rate}"
            )
        self.max_similarity: float | None = getattr(args, "max_similarity", None)  # generate only
        if self.max_similarity is not None and not 0 < self.max_similarity <= 1:
            raise DrumdiffError(
                f"--max-similarity must be in (0, 1] (a correlation; 0.99 flags near-copies), "
                f"got {self.max_similarity}"
            )
        if args.threads is not None:
            cores = os.cpu_count() or 1
            if not 1 <= args.threads <= cores:
                raise DrumdiffError(
                    f"--threads must be from 1 to {cores} (the CPUs here), got {args.threads}"
                )
            torch.set_num_threads(args.threads)
        self.seed: int | None = None  # interpolate draws no noise
        if hasattr(args, "seed"):
            if args.seed is not None:
                check_seed(args.seed, n, what="--seed")
            self.seed = args.seed if args.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        if self.options.steps > MANY_STEPS:
            print(
                f"warning: --steps {self.options.steps} is far more than the samplers need (10-50 for "
                "generate, vary and inpaint; 100-200 for interpolate); each batch runs that many network "
                "evaluations",
                file=sys.stderr,
            )
        self.model = load_model(args.model, device=args.device)
        self.class_name = self.model.resolve_class(args.class_name)
        # The scale sampling will use (None: the default for a request with a class, 1 without), recorded.
        self.options = SamplingOptions.of(
            self.options, guidance=self.model.guidance_for(self.class_name, self.options)
        )
        self.model_sha256 = file_digest(self.model.path)
        self.rate = args.sample_rate or self.model.sample_rate
        self._check_format()
        self.originality = self._open_originality()  # None: no index, nothing extra is reported
        self.nearest: list[tuple[float, str]] = []  # (similarity, training clip) of each written clip
        # (clip index, nearest record) of the clips above NEAR_COPY, warned about without --max-similarity
        self.near_copies: list[tuple[int, dict]] = []
        self.redrawn = 0
        # notes while sampling: plain lines on stderr, or through the progress bar while it is shown
        self._say = functools.partial(print, file=sys.stderr)
        self.folder: Path | None = None
        self.started = time.perf_counter()
        self.written: list[Path] = []
        self._stem: str | None = None

    def _open_originality(self):
        """The originality check of `--index`, else of the index beside the model file; None without one.

        Only generate has --index. The classifier is imported only when an index exists (startup stays fast).
        A broken index found beside the model is a warning, unless --max-similarity needs it."""
        from drumdiff.errors import DrumdiffError

        if not hasattr(self.args, "index"):
            return None
        given = self.args.index
        beside = self.model.path.with_name(self.model.path.stem + INDEX_SUFFIX)
        path = Path(given) if given is not None else beside
        if given is not None and not path.is_file():
            raise DrumdiffError(f"--index {given}: no such file")
        if not path.is_file():
            if self.max_similarity is not None:
                raise DrumdiffError(
                    f"--max-similarity needs the originality index of the model, and none was found for "
                    f"{self.model.path} (looked for {path}); build one from the model's training data with "
                    f"`python -m drumdiff.evaluation.originality DATA --out {path}`, or pass --index FILE"
                )
            return None
        from drumdiff.evaluation.originality import open_check

        try:
            check = open_check(path)
        except DrumdiffError as error:
            if given is not None or self.max_similarity is not None:
                raise
            print(f"warning: {error}; nearest training clips are not reported", file=sys.stderr)
            return None
        from drumdiff.files import file_digest

        self.index_record = {"path": str(path), "sha256": file_digest(path)}
        return check

    def _check_format(self) -> None:
        """Refuse, before sampling, output the format cannot hold (WAV's 4 GB)."""
        from drumdiff.audio import format_limit
        from drumdiff.errors import DrumdiffError

        frames = math.floor(self.model.length * self.rate / self.model.sample_rate + 0.5)
        problem = format_limit(
            self.args.format, channels=self.model.channels, frames=frames, sample_rate=self.rate
        )
        if problem:
            raise DrumdiffError(f"--format {self.args.format} at {self.rate} Hz: {problem}")

    def read_input(self, path: Path):
        """Read an input file and convert it to the model's format, warning once about what was done."""
        from drumdiff import audio as audio_io
        from drumdiff.pipeline import conform_audio

        audio, rate = audio_io.read(path)
        clip, done = conform_audio(audio, rate, self.model.config)
        if done:
            print(f"warning: {path}: {', '.join(done)} to fit the model", file=sys.stderr)
        return clip

    def run(
        self,
        make_batch: MakeBatch,
        *,
        stems: list[str],
        extra: list[dict[str, Any]],
        steps_per_batch: int,
        batch_size: int | None = None,
        redraw: Redraw | None = None,
    ) -> int:
        """Sample the request batch by batch, writing each batch as it finishes; then the plot and summary.

        With an originality index each clip's record names its nearest training clip; with --max-similarity
        `redraw(seed)` re-draws a clip that is too close to one."""
        import torch

        from drumdiff.errors import DrumdiffError
        from drumdiff.outputs import prepare_folder
        from drumdiff.progress import Progress

        stems, extra = list(stems), [dict(e) for e in extra]  # a re-drawn clip changes its seed and name
        n, size = self.n, batch_size or self.options.batch_size
        made = _first_missing(Path(self.args.out))  # the folder (or ancestor) this request creates
        self.folder = prepare_folder(self.args.out)
        bar = None
        if self.args.progress:
            bar = Progress(-(-n // size) * steps_per_batch, desc=self.operation, unit="step")
            self._say = functools.partial(bar.write, file=sys.stderr)
        shown: list[Any] = []
        try:
            for first in range(0, n, size):
                count = min(size, n - first)
                began = time.perf_counter()
                clips = make_batch(first, count, bar.update if bar else None)
                if not bool(torch.isfinite(clips).all()):
                    raise DrumdiffError(self._non_finite_cause())
                if self.originality is not None:
                    clips = self._check_originality(clips, first, stems=stems, extra=extra, redraw=redraw)
                if self.args.gate:
                    from drumdiff.postprocess import gate_tail

                    clips = gate_tail(clips, self.model.sample_rate)
                if self.rate != self.model.sample_rate:
                    from drumdiff import audio as audio_io

                    clips = torch.stack(
                        [audio_io.resample(c, self.model.sample_rate, self.rate) for c in clips]
                    )
                per_clip = (time.perf_counter() - began) / count
                paths = self._write(
                    clips, stems[first : first + count], extra[first : first + count], per_clip
                )
                if self.args.plot and len(shown) < PLOT_CLIPS:
                    shown.extend(clips[: PLOT_CLIPS - len(shown)])
                for path in paths:
                    (bar.write if bar is not None else print)(str(path))  # never through the bar
        except BaseException as error:
            if bar is not None:
                bar.close()  # before the error line is printed
            kept = len(self.written)
            if not kept and made is not None:
                self._remove_empty_folders(up_to=made)
            if isinstance(error, KeyboardInterrupt):
                done = f"{kept} of {n} clip(s) written to {self.folder}" if kept else "nothing written"
                raise KeyboardInterrupt(f"interrupted: {done}") from None
            if kept and isinstance(error, DrumdiffError):
                raise DrumdiffError(
                    f"{error}; the {kept} clip(s) written before are kept in {self.folder} "
                    f"(listed in {self.folder / 'generation.jsonl'})"
                ) from error
            raise
        if bar is not None:
            bar.close()
        if shown:
            self._plot(torch.stack(shown))
        if self.near_copies:
            listed = ", ".join(
                f"clip {i} ~ {near['clip']} ({near['similarity']:.4f})" for i, near in self.near_copies[:5]
            )
            more = f" and {len(self.near_copies) - 5} more" if len(self.near_copies) > 5 else ""
            print(
                f"warning: {len(self.near_copies)} clip(s) may be near-copies of training clips (similarity above "
                f"{NEAR_COPY}, docs/evaluation.md, Originality): {listed}{more}; --max-similarity {NEAR_COPY} "
                "re-draws such clips",
                file=sys.stderr,
            )
        seconds = time.perf_counter() - self.started
        seed = "" if self.seed is None else f", seed {self.seed}"
        print(
            f"{self.operation}: {n} clip(s) in {seconds:.1f} s ({seconds / n:.2f} s per clip{seed}) -> {self.folder}"
            + self._originality_summary(),
            file=sys.stderr,
        )
        return 0

    def _check_originality(
        self, clips, first: int, *, stems: list[str], extra: list[dict], redraw: Redraw | None
    ):
        """Record each clip's nearest training clip; above --max-similarity, re-draw it with new seeds."""
        import torch

        found = self.originality.check(clips, self.model.sample_rate)
        limit = self.max_similarity
        out = list(clips)
        for j, near in enumerate(found):
            i = first + j
            if limit is not None and near["similarity"] > limit and redraw is not None:
                out[j], near, tried = self._redraw(i, out[j], seed=extra[i]["seed"], redraw=redraw)
                extra[i]["seed"], extra[i]["redrawn_from_seeds"] = tried[-1], tried[:-1]
                if self._stem is not None:
                    stems[i] = f"{self._stem}_seed{tried[-1]}_{i:03d}"
                self.redrawn += 1
            extra[i]["nearest_training_clip"] = near
            self.nearest.append((near["similarity"], near["clip"]))
        if limit is None:  # reported once, before the summary line
            self.near_copies += [
                (i, near) for i, near in enumerate(found, start=first) if near["similarity"] > NEAR_COPY
            ]
        return torch.stack(out)

    def _redraw(self, i: int, clip, *, seed: int, redraw: Redraw) -> tuple[Any, dict, list[int]]:
        """Draw clip i again from seeds stable_seed(request seed, i, attempt) until its nearest training clip
        is at most --max-similarity (`originality.redraw_near_copy`). Returns (clip, its nearest record, the
        seeds drawn with the kept one last)."""
        import torch

        from drumdiff.errors import DrumdiffError
        from drumdiff.evaluation.originality import redraw_near_copy
        from drumdiff.files import stable_seed

        def draw(new_seed: int):
            new = redraw(new_seed)
            if not bool(torch.isfinite(new).all()):
                raise DrumdiffError(self._non_finite_cause())
            return new

        return redraw_near_copy(
            clip, seed, draw=draw, seeds=(stable_seed(self.seed, i, attempt) for attempt in itertools.count(1)),
            nearest=lambda c: self.originality.check(c[None], self.model.sample_rate)[0],
            limit=self.max_similarity, say=lambda line: self._say(f"clip {i}: {line}"),
            warn=lambda line: self._say(f"warning: clip {i}: {line}"),
        )  # fmt: skip

    def _originality_summary(self) -> str:
        """'; nearest training clip: max similarity S (CLIP)[, K re-drawn]' for the summary line."""
        if not self.nearest:
            return ""
        similarity, clip = max(self.nearest)
        redrawn = f", {self.redrawn} re-drawn" if self.redrawn else ""
        return f"; nearest training clip: max similarity {similarity:.4f} ({clip}){redrawn}"

    def _non_finite_cause(self) -> str:
        """Blame NaN/Inf output on the value that causes it (a huge --guidance), else on the model."""
        guidance = self.options.guidance
        if guidance != 1.0 and self.class_name is not None:
            return f"sampling gave NaN or Inf samples: --guidance {guidance:g} is too large for this model"
        return f"sampling gave NaN or Inf samples: the model {self.model.path} is broken (weights or layout)"

    def _write(self, clips, stems: list[str], extra: list[dict[str, Any]], per_clip: float) -> list[Path]:
        import torch

        from drumdiff import __version__
        from drumdiff.outputs import write_clips

        base = {
            "operation": self.operation,
            "model": {"path": str(self.model.path), "sha256": self.model_sha256},
            "class_name": self.class_name,
            "sampler": getattr(self.args, "sampler", "ddim"),  # interpolate inverts and decodes with DDIM
            "schedule": self.options.schedule,
            "steps": self.options.steps,
            "guidance": self.options.guidance,
            "guidance_interval": list(self.options.guidance_interval),
            "gate": self.args.gate,
            "n": self.n,
            "batch_size": self.options.batch_size,
            "sample_rate": self.rate,
            "format": self.args.format,
            "device": str(self.model.device),
            "threads": torch.get_num_threads(),
            "drumdiff_version": __version__,
            "torch_version": torch.__version__,
        }
        if self.class_name != self.args.class_name:
            base["class_name_requested"] = self.args.class_name
        if self.seed is not None:
            base["request_seed"] = self.seed
        if self.originality is not None:
            base["originality_index"] = self.index_record
            if self.max_similarity is not None:
                base["max_similarity"] = self.max_similarity
        timing = {"timing": {"seconds_per_clip": round(per_clip, 4), "unix_time": round(time.time(), 3)}}
        records = [{**base, **e, **timing} for e in extra]
        assert self.folder is not None
        paths = write_clips(
            self.folder, clips, stems=stems, records=records, sample_rate=self.rate, format=self.args.format
        )
        self.written.extend(paths)
        return paths

    def _plot(self, clips) -> None:
        from drumdiff.plots import save_clips_png

        assert self.folder is not None
        png = self.folder / f"{self.written[0].stem}.png"
        save_clips_png(png, clips, sample_rate=self.rate, titles=[p.stem for p in self.written[: len(clips)]])
        print(png)

    def _remove_empty_folders(self, *, up_to: Path) -> None:
        """A request that wrote nothing leaves no folder it made: --out and its new parents, up to `up_to`
        (only the lock file may be in --out). A folder another process writes into is not empty: it stays."""
        from drumdiff.outputs import LOCK_NAME

        if self.folder is None:
            return
        folder: Path | None = self.folder.absolute()
        try:
            if os.listdir(folder) == [LOCK_NAME]:
                (folder / LOCK_NAME).unlink()
            while folder is not None:
                folder.rmdir()
                folder = None if folder == up_to or folder == folder.parent else folder.parent
        except OSError:
            pass  # not empty, or already gone: leave it

    def sampling_kwargs(self, first: int, count: int, tick: Any) -> dict[str, Any]:
        """The keyword arguments of the pipeline call for clips first .. first + count - 1."""
        assert self.seed is not None
        return dict(
            n=count, seed=self.seed + first, class_name=self.class_name, options=self.options, progress=tick
        )

    def seeded(self, stem: str, **fields: Any) -> dict[str, list]:
        """File stems `STEM_seedS_III` and per-clip record fields for the n clips seeded SEED + i."""
        assert self.seed is not None
        seeds = [self.seed + i for i in range(self.n)]
        self._stem = stem  # a re-drawn clip i is named STEM_seedS_III after its new seed
        return {
            "stems": [f"{stem}_seed{s}_{i:03d}" for i, s in enumerate(seeds)],
            "extra": [{"index": i, "seed": s, **fields} for i, s in enumerate(seeds)],
        }

    def input_label(self, path: Path) -> str:
        from drumdiff.outputs import safe_label

        return safe_label(path.stem)

    def label(self) -> str:
        from drumdiff.outputs import safe_label

        if self.class_name:
            return safe_label(self.class_name)
        names = self.model.class_names
        return safe_label(names[0]) if len(names) == 1 else "drum"


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None when `path` exists)."""
    if path.exists():
        return None
    path = path.absolute()
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path
