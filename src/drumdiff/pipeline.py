"""Load a model file, then generate, vary, interpolate and inpaint drum one-shots.

    import drumdiff
    model = drumdiff.load_model("path/to/model.safetensors")   # or a shipped / user model name
    clips = model.generate(n=4, seed=1, class_name="kick")    # float32 [4, C, T]

Every method is keyword-only and returns float32 `[B, C, T]` on the CPU. Clip i of a request uses seed
SEED + i for all its randomness, so it is the same clip however many clips were asked for and whatever the
batch size, up to floating-point rounding: batched arithmetic may move a sample by a few 24-bit steps. The
same call on the same device and thread count gives the same bits.
How to sample (sampler, steps, schedule, guidance, batch size) is one `SamplingOptions`, checked once when it
is made; the methods take it as `options=` or its fields as keywords (`steps=10`).

Where model files are found (`list_models`, `resolve_model`, `user_model_dir`, `SHIPPED_DIR`) lives in
`drumdiff.modelfile`, which does not import torch; the names are re-exported here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from drumdiff.config import (  # noqa: F401 (re-exported: the sampling defaults)
    DEFAULT_EDIT_STEPS,
    DEFAULT_GUIDANCE,
    DEFAULT_GUIDANCE_INTERVAL,
    DEFAULT_SAMPLER,
    DEFAULT_SCHEDULE,
    DEFAULT_STEPS,
    ModelConfig,
)
from drumdiff.diffusion import add_noise, make_denoiser
from drumdiff.errors import DrumdiffError
from drumdiff.modelfile import SHIPPED_DIR, ModelEntry, list_models, resolve_model, user_model_dir  # noqa: F401
from drumdiff.sampling import (
    SAMPLERS,
    SCHEDULES,
    get_sampler,
    get_schedule,
    invert_ddim,
    log_snr_schedule,
    sample_ddim,
    slerp,
)

# progress(steps_done) is called after each network evaluation step, for progress bars.
Progress = Callable[[int], None]

DEFAULT_KEEP_MS = 40.0
DEFAULT_INTERPOLATE_STEPS = 100  # inversion needs more steps than sampling to reconstruct the endpoints
SEED_MAX = 2**64 - 1  # torch generators take 64-bit seeds; clip i of a request uses SEED + i
MIN_SPACED_T = 1e-3  # log_snr_schedule's t_min: below it a schedule is one step straight to t = 0


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample; every value is checked here, once, with a DrumdiffError naming it.

    sampler: a name in `drumdiff.sampling.SAMPLERS`; schedule: a name in `SCHEDULES`; steps: sampler steps per
    clip (vary runs `round(steps * strength)`; `vary` and `inpaint` called without options use
    DEFAULT_EDIT_STEPS); guidance: classifier-free guidance scale (1 =
    plain conditional; None: DEFAULT_GUIDANCE for a request with a class, 1 without one); guidance_interval:
    (low, high], the diffusion times t at which guidance is applied (elsewhere the plain conditional
    prediction, one network evaluation instead of two); batch_size: clips per network batch (results do not
    depend on it).
    """

    sampler: str = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS
    schedule: str = DEFAULT_SCHEDULE
    guidance: float | None = None
    guidance_interval: tuple[float, float] = DEFAULT_GUIDANCE_INTERVAL
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise DrumdiffError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.schedule not in SCHEDULES:
            raise DrumdiffError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise DrumdiffError(f"steps must be a whole number of at least 1, got {self.steps!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise DrumdiffError(f"batch size must be a whole number of at least 1, got {self.batch_size!r}")
        if self.guidance is not None and not math.isfinite(self.guidance):
            raise DrumdiffError(f"guidance must be a finite number, got {self.guidance}")
        low, high = self.guidance_interval
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high <= 1):
            raise DrumdiffError(
                f"guidance interval must be two diffusion times with 0 <= low < high <= 1, got {low:g} {high:g}"
            )

    @classmethod
    def of(cls, options: SamplingOptions | None = None, /, **fields: Any) -> SamplingOptions:
        """`options` (default: the defaults) with some fields replaced; an unknown field is a DrumdiffError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise DrumdiffError(
                f"unknown sampling option {', '.join(unknown)}; the options are {', '.join(sorted(known))}"
            )
        return dataclasses.replace(options or cls(), **fields)


# ---------------------------------------------------------------------------------------------- devices


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The given device (checked to exist in this torch and machine), else CUDA, else Apple's MPS, else the CPU."""
    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise DrumdiffError(f"unknown device {device!r}; choose cpu, cuda, cuda:N or mps") from error
        _check_device(dev, str(device))
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _check_device(dev: torch.device, name: str) -> None:
    """Refuse a device this torch was not built for, or that this machine does not have."""
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            built = "has no usable CUDA GPU" if torch.version.cuda else "was built without CUDA"
            raise DrumdiffError(
                f"device {name!r}: this torch ({torch.__version__}) {built}; use --device cpu"
            )
        if dev.index is not None and dev.index >= count:
            raise DrumdiffError(f"device {name!r}: there is no GPU {dev.index} (this machine has {count})")
        return
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DrumdiffError(
                f"device {name!r}: Apple's MPS is not available to this torch ({torch.__version__}); "
                "use --device cpu"
            )
        return
    raise DrumdiffError(f"device {name!r} cannot run drumdiff; choose cpu, cuda, cuda:N or mps")


def load_model(name_or_path: str | os.PathLike | None = None, *, device: Any = None) -> DrumPipeline:
    """Load a model file (path, shipped name or user model name) into a `DrumPipeline`."""
    from drumdiff.modelfile import load_model_file

    path = resolve_model(name_or_path)
    dev = pick_device(device)
    loaded = load_model_file(path, device=dev)
    return DrumPipeline(
        loaded.net,
        loaded.config,
        class_names=loaded.class_names,
        device=dev,
        path=path,
        metadata=loaded.metadata,
    )


# ---------------------------------------------------------------------------------------------- the pipeline


class DrumPipeline:
    """A network plus what is needed to sample from it. Build with `load_model` or `from_network`."""

    def __init__(
        self,
        net: nn.Module,
        config: ModelConfig,
        *,
        class_names: list[str] | tuple[str, ...] = (),
        device: torch.device | str = "cpu",
        path: Path | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.net = net
        self.config = config
        self.class_names = list(class_names)
        self.device = torch.device(device)
        self.path = path
        self.metadata = metadata or {}

    @classmethod
    def from_network(
        cls, net: nn.Module, config: ModelConfig, *, class_names: list[str] | tuple[str, ...] = ()
    ) -> DrumPipeline:
        """Wrap a network already in memory (training previews use this: same code as `drumdiff generate`)."""
        device = next(net.parameters()).device
        return cls(net, config, class_names=class_names, device=device)

    # -- facts about the audio this model makes
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def length(self) -> int:
        return self.config.length

    @property
    def channels(self) -> int:
        return self.config.audio_channels

    # -- public operations
    def generate(
        self,
        *,
        n: int = 1,
        seed: int = 0,
        class_name: str | None = None,
        options: SamplingOptions | None = None,
        progress: Progress | None = None,
        **sampling: Any,
    ) -> Tensor:
        """N fresh clips from pure noise. Returns float32 [n, C, T].

        `options` and/or its fields as keywords (`steps=10, sampler="ddim"`) say how to sample.
        """
        options = SamplingOptions.of(options, **sampling)
        return self._sample(
            n=n, seed=seed, class_name=class_name, options=options, progress=progress, start=None, t_start=1.0
        )

    def vary(
        self,
        audio: Tensor,
        *,
        strength: float = 0.5,
        n: int = 1,
        seed: int = 0,
        class_name: str | None = None,
        options: SamplingOptions | None = None,
        progress: Progress | None = None,
        **sampling: Any,
    ) -> Tensor:
        """SDEdit: noise `audio` [C, T] to t = strength, then denoise. n variations -> [n, C, T].

        The sampler runs `vary_steps(steps, strength)` steps, so strength 1.0 is exactly `generate` with the
        same seed: at t = 1 no trace of the input is left.
        """
        if not 0 < strength <= 1:
            raise DrumdiffError(f"strength must be in (0, 1], got {strength}")
        options = SamplingOptions.of(options or SamplingOptions(steps=DEFAULT_EDIT_STEPS), **sampling)
        clip = self._check_audio(audio)
        return self._sample(
            n=n,
            seed=seed,
            class_name=class_name,
            options=dataclasses.replace(options, steps=vary_steps(options.steps, strength)),
            progress=progress,
            start=clip,
            t_start=strength,
        )

    def inpaint(
        self,
        audio: Tensor,
        *,
        keep: tuple[int, int] | Tensor | None = None,
        n: int = 1,
        seed: int = 0,
        class_name: str | None = None,
        options: SamplingOptions | None = None,
        progress: Progress | None = None,
        **sampling: Any,
    ) -> Tensor:
        """Regenerate everything outside a kept region of `audio` [C, T]; the kept samples come back unchanged.

        `keep` is a (start, end) sample range or a bool mask [T]; default: the first 40 ms (the attack).
        At every step the kept region of x_t is replaced by the input noised to that step's t with the
        clip's own noise, so the new part grows out of the kept part.
        """
        options = SamplingOptions.of(options or SamplingOptions(steps=DEFAULT_EDIT_STEPS), **sampling)
        clip = self._check_audio(audio)
        mask = self._keep_mask(keep)
        return self._sample(
            n=n,
            seed=seed,
            class_name=class_name,
            options=options,
            progress=progress,
            start=None,
            t_start=1.0,
            inpaint=(clip, mask),
        )

    def interpolate(
        self,
        a: Tensor,
        b: Tensor,
        *,
        frames: int = 5,
        class_name: str | None = None,
        options: SamplingOptions | None = None,
        progress: Progress | None = None,
        **sampling: Any,
    ) -> Tensor:
        """Blend two clips: DDIM-invert both to noise, slerp the noises, decode. Returns [frames, C, T].

        `frames` counts the endpoints (frame 0 reconstructs a, the last reconstructs b). Inversion and
        decoding are deterministic DDIM on the same `steps`-point log-SNR schedule (default
        DEFAULT_INTERPOLATE_STEPS; more steps reconstruct the endpoints better); `sampler` and `schedule`
        are not used.
        """
        if frames < 2:
            raise DrumdiffError(f"frames must be at least 2, got {frames}")
        options = SamplingOptions.of(options or SamplingOptions(steps=DEFAULT_INTERPOLATE_STEPS), **sampling)
        if options.steps < 2:
            raise DrumdiffError(
                f"interpolate needs at least 2 steps (inversion runs steps - 1), got {options.steps}"
            )
        clips = torch.stack([self._check_audio(a), self._check_audio(b)]).to(self.device)
        try:
            ts = log_snr_schedule(options.steps, t_max=1.0, t_min=1e-3)
        except ValueError as error:
            raise DrumdiffError(str(error)) from error
        denoiser = self._denoiser(class_name, options, batch=2)
        tick = _ticker(progress)
        with torch.inference_mode():
            latents = invert_ddim(denoiser, clips, ts[:-1].flip(0), callback=tick)  # (2, C, T) at t = 1
            mixes = torch.stack([slerp(latents[0], latents[1], i / (frames - 1)) for i in range(frames)])
            out = []
            for chunk in mixes.split(options.batch_size):
                den = self._denoiser(class_name, options, batch=len(chunk))
                out.append(sample_ddim(den, chunk, ts, callback=tick))
        return torch.cat(out).float().cpu()

    # -- shared machinery
    def _sample(
        self,
        *,
        n: int,
        seed: int,
        class_name: str | None,
        options: SamplingOptions,
        progress: Progress | None,
        start: Tensor | None,
        t_start: float,
        inpaint: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        if n < 1:
            raise DrumdiffError(f"the number of clips must be at least 1, got {n}")
        check_seed(seed, n)
        sample = get_sampler(options.sampler)
        if t_start < MIN_SPACED_T:  # vary at a tiny strength: one step from t_start straight to 0
            ts = torch.tensor([t_start, 0.0], dtype=torch.float64)
        else:
            ts = get_schedule(options.schedule)(options.steps, t_max=t_start)
        tick = _ticker(progress)
        out = []
        with torch.inference_mode():
            for first in range(0, n, options.batch_size):
                seeds = list(range(seed + first, seed + min(n, first + options.batch_size)))
                gens = [torch.Generator().manual_seed(s) for s in seeds]
                noise = self._noise(gens)  # (B, C, T): clip i's own start noise
                if start is None or t_start >= 1.0:
                    x = noise.clone()  # t = 1: pure noise (alpha = 0), whatever the input
                else:
                    x = add_noise(start.to(self.device).expand_as(noise), noise, torch.tensor(t_start))
                denoiser = self._denoiser(class_name, options, batch=len(seeds))
                if inpaint is not None:
                    denoiser = _inpainting(denoiser, *inpaint, noise=noise, device=self.device)
                x = sample(denoiser, x, ts, noise_fn=lambda gens=gens: self._noise(gens), callback=tick)
                if inpaint is not None:
                    clip, mask = inpaint
                    x = torch.where(mask.to(self.device), clip.to(self.device), x)
                out.append(x.float().cpu())
        return torch.cat(out)

    def _noise(self, generators: list[torch.Generator]) -> Tensor:
        """Standard normal [B, C, T], row i drawn from generator i on the CPU (device-independent)."""
        shape = (self.channels, self.length)
        return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(self.device)

    def guidance_for(self, class_name: str | None, options: SamplingOptions) -> float:
        """The guidance scale a request samples with: the options' own, else DEFAULT_GUIDANCE when the request
        has a class this model is conditioned on, else 1 (plain). An explicit scale other than 1 without a
        class is a DrumdiffError (there is nothing to guide towards)."""
        class_id = self._class_id(class_name)
        if options.guidance is None:
            return DEFAULT_GUIDANCE if class_id is not None else 1.0
        if class_id is None and options.guidance != 1.0 and self.config.conditional:
            raise DrumdiffError(
                f"guidance {options.guidance:g} needs a class name (this model knows {', '.join(self.class_names)})"
            )
        return options.guidance

    def _denoiser(self, class_name: str | None, options: SamplingOptions, *, batch: int):
        guidance = self.guidance_for(class_name, options)
        class_id = self._class_id(class_name)
        ids = None  # no class: the plain network (make_denoiser guides only with a class)
        if class_id is not None:
            ids = torch.full((batch,), class_id, dtype=torch.long, device=self.device)
        return make_denoiser(
            self.net,
            class_id=ids,
            guidance=guidance,
            null_class=self.config.num_classes,
            interval=options.guidance_interval,
            sigma_data=self.config.sigma_data,
            skip_scale=self.config.skip_scale,
        )

    def resolve_class(self, class_name: str | None) -> str | None:
        """The model's own spelling of `class_name`, matched exactly, else ignoring case, punctuation and a
        plural s (`kick` finds `Kicks`); a DrumdiffError lists the classes when none or several match."""
        if class_name is None or class_name in self.class_names:
            return class_name
        matches = [c for c in self.class_names if class_key(c) == class_key(class_name)]
        if len(matches) == 1:
            return matches[0]
        if not self.config.conditional:
            shown = f"({self.class_names[0]})" if self.class_names else "without classes"
            raise DrumdiffError(f"unknown class {class_name!r}: this model is unconditional {shown}")
        if matches:
            raise DrumdiffError(f"class {class_name!r} is ambiguous: it could be {', '.join(matches)}")
        raise DrumdiffError(f"unknown class {class_name!r}; this model knows {', '.join(self.class_names)}")

    def _class_id(self, class_name: str | None) -> int | None:
        name = self.resolve_class(class_name)
        if name is None or not self.config.conditional:
            return None  # unconditional (also a model named after its one class)
        return self.class_names.index(name)

    def _check_audio(self, audio: Tensor) -> Tensor:
        """A clip in this model's format, [C, T] float32 (convert other audio with `conform_audio`)."""
        if audio.dim() == 3 and audio.shape[0] == 1:
            audio = audio[0]
        expected = (self.channels, self.length)
        if audio.dim() != 2 or tuple(audio.shape) != expected:
            raise DrumdiffError(
                f"audio of shape {tuple(audio.shape)} does not fit this model, which needs {expected} "
                "(use drumdiff.pipeline.conform_audio)"
            )
        if not torch.isfinite(audio).all():
            raise DrumdiffError("audio contains NaN or infinite samples")
        return audio.float()

    def _keep_mask(self, keep: tuple[int, int] | Tensor | None) -> Tensor:
        if keep is None:
            keep = (0, round(DEFAULT_KEEP_MS * self.sample_rate / 1000))
        if isinstance(keep, Tensor):
            if keep.shape != (self.length,) or keep.dtype != torch.bool:
                raise DrumdiffError(f"keep mask must be bool of shape ({self.length},)")
            return keep.reshape(1, 1, -1)
        start, end = keep
        if not 0 <= start < end <= self.length:
            raise DrumdiffError(f"keep range ({start}, {end}) is outside 0..{self.length}")
        mask = torch.zeros(self.length, dtype=torch.bool)
        mask[start:end] = True
        return mask.reshape(1, 1, -1)


def check_seed(seed: Any, n: int = 1, *, what: str = "seed") -> None:
    """Refuse a seed outside 0..SEED_MAX, or one whose last clip (seed + n - 1) would pass SEED_MAX."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX - (n - 1):
        top = SEED_MAX - (n - 1)
        more = f" for {n} clips (clip i uses {what} + i)" if n > 1 else ""
        raise DrumdiffError(f"{what} must be a whole number from 0 to {top}{more}, got {seed!r}")


def class_key(name: str) -> str:
    """How class names are compared: case, punctuation and a plural s ignored ("Kicks" finds "kick")."""
    key = re.sub(r"[\W_]+", "", name.casefold())
    return key[:-1] if key.endswith("s") and len(key) > 1 else key


def vary_steps(steps: int, strength: float) -> int:
    """The sampler steps `vary` runs: the part of the schedule below t = strength (at least 1; exactly 1
    below MIN_SPACED_T, where the step goes straight to t = 0)."""
    return 1 if strength < MIN_SPACED_T else max(1, round(steps * strength))


def _inpainting(denoiser, clip: Tensor, mask: Tensor, *, noise: Tensor, device: torch.device):
    """Wrap a denoiser so the kept region always follows the input noised with the clip's own noise."""
    clip, mask = clip.to(device), mask.to(device)

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        known = add_noise(clip.expand_as(x_t), noise, t)
        x_t = torch.where(mask, known, x_t)
        return torch.where(mask, clip, denoiser(x_t, t))

    return denoise


def _ticker(progress: Progress | None):
    if progress is None:
        return None
    return lambda i, x, x0: progress(1)


def conform_audio(audio: Tensor, sample_rate: int, config: ModelConfig) -> tuple[Tensor, list[str]]:
    """Convert a clip [C, T] of any rate, channel count and length to the model's format.

    Returns the converted clip and a list of what was done (empty when nothing was needed).
    """
    from drumdiff import audio as audio_io

    done = []
    if sample_rate != config.sample_rate:
        audio = audio_io.resample(audio, sample_rate, config.sample_rate)
        done.append(f"resampled {sample_rate} -> {config.sample_rate} Hz")
    if audio.shape[0] != config.audio_channels:
        done.append(f"{audio.shape[0]} -> {config.audio_channels} channels")
        audio = audio_io.to_channels(audio, config.audio_channels)
    if audio.shape[1] != config.length:
        verb = "cropped" if audio.shape[1] > config.length else "padded"
        done.append(f"{verb} {audio.shape[1]} -> {config.length} samples")
        audio = audio_io.fit_length(audio, config.length, sample_rate=config.sample_rate)
    return audio.float(), done
