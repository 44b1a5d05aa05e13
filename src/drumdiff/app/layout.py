"""The layout of the `drumdiff app` page: each part is a small function returning a dataclass of components.

`drumdiff.app.events` connects these components to the `Studio`; `drumdiff.app.page.build_app` puts both
together. Only the system's fonts are used (`theme`), so the page fetches nothing from other hosts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from drumdiff.app.actions import KitResult, Result, Studio, random_seed
from drumdiff.app.session import MAX_UPLOAD_MB
from drumdiff.kits.formats import MAX_NAME, MAX_ROUND_ROBINS
from drumdiff.kits.make import DEFAULT_LOUDNESS_LUFS, LOUDNESS_RANGE
from drumdiff.kits.pads import DEFAULT_PADS, SHORT_NAMES
from drumdiff.pipeline import (
    DEFAULT_EDIT_STEPS,
    DEFAULT_GUIDANCE,
    DEFAULT_INTERPOLATE_STEPS,
    DEFAULT_KEEP_MS,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    SamplingOptions,
)
from drumdiff.sampling import SAMPLERS

MAX_CLIPS = 8  # players per results grid
MAX_STEPS = 200
ANY_CLASS = ""  # the class menus' "any class" entry (the null class of a conditional model)
CSS = ".drumdiff-slot { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px; }"


def theme() -> gr.themes.Base:
    """Gradio's default look with the system's own fonts: the page fetches no font from anywhere."""
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )


# ---------------------------------------------------------------------------------------------- layout parts


@dataclass
class Controls:
    """Sampling inputs of one tab; `options` and `request` turn their values into the Studio's arguments."""

    class_name: gr.Dropdown | None  # None: the Kit tab (every pad has its class)
    steps: gr.Slider
    n: gr.Slider | None = None
    sampler: gr.Dropdown | None = None
    guidance: gr.Slider | None = None
    seed: gr.Number | None = None

    def inputs(self) -> set[gr.components.Component]:
        parts = [self.class_name, self.steps, self.n, self.sampler, self.guidance, self.seed]
        return {p for p in parts if p is not None}

    def options(self, values: dict) -> SamplingOptions:
        """The SamplingOptions these controls say (a DrumdiffError for a bad value)."""
        fields: dict[str, Any] = {"steps": int(values[self.steps])}
        if self.sampler is not None:
            fields["sampler"] = values[self.sampler]
        any_class = self.class_name is not None and values[self.class_name] == ANY_CLASS
        if self.guidance is not None and not any_class:  # guidance guides towards a class; "any class": none
            fields["guidance"] = float(values[self.guidance])
        return SamplingOptions.of(**fields)

    def request(self, values: dict) -> dict[str, Any]:
        """class_name, n and seed where this tab has them, as the Studio's keyword arguments."""
        out: dict[str, Any] = {}
        if self.class_name is not None:
            out["class_name"] = values[self.class_name] or None
        if self.n is not None:
            out["n"] = int(values[self.n])
        if self.seed is not None:
            seed = values[self.seed]
            out["seed"] = None if seed is None or seed < 0 else int(seed)
        return out


def controls(
    studio: Studio,
    *,
    prefix: str,
    steps: int,
    n: int | None,
    seeded: bool = True,
    any_class: bool = True,
    classed: bool = True,
) -> Controls:
    """Class, steps, number of clips, sampler, guidance and seed (with a "random" button).

    `any_class=False` starts the class menu on the model's first class instead of "any class"; `seeded=False`
    (interpolate: deterministic DDIM) leaves out the sampler and the seed; `n=None` leaves out the count;
    `classed=False` (the Kit tab) leaves out the class menu.
    """
    model = studio.model
    conditional = model.config.conditional
    choices = [(c, c) for c in model.class_names] + ([("any class", ANY_CLASS)] if conditional else [])
    first = model.class_names[0] if conditional and not any_class else ANY_CLASS
    with gr.Row():
        class_name = None
        if classed:
            class_name = gr.Dropdown(
                choices or [("any class", ANY_CLASS)],
                value=first,
                label="class",
                visible=conditional,
                elem_id=f"{prefix}-class",
            )
        count = None
        if n is not None:
            count = gr.Slider(1, MAX_CLIPS, value=n, step=1, label="clips", elem_id=f"{prefix}-n")
        step_slider = gr.Slider(1, MAX_STEPS, value=steps, step=1, label="steps", elem_id=f"{prefix}-steps")
        sampler = gr.Dropdown(list(SAMPLERS), value=DEFAULT_SAMPLER, label="sampler") if seeded else None
        guidance = gr.Slider(
            0, 8, value=DEFAULT_GUIDANCE, step=0.5, label="guidance (with a class)", visible=conditional
        )
    seed = None
    if seeded:
        with gr.Row():
            seed = gr.Number(
                value=-1,
                precision=0,
                minimum=-1,
                label="seed (-1: a new one each time)",
                elem_id=f"{prefix}-seed",
            )
            dice = gr.Button("Random seed", size="sm", elem_id=f"{prefix}-random-seed")
        dice.click(random_seed, None, seed, queue=False)
    return Controls(class_name, step_slider, count, sampler, guidance, seed)


@dataclass
class Slot:
    column: gr.Column
    audio: gr.Audio
    picture: gr.Image
    download: gr.DownloadButton
    keep: gr.Button
    use: gr.Button


@dataclass
class Grid:
    """A results grid: up to MAX_CLIPS players with picture, download, keep and "use as input"."""

    name: str
    results: gr.State
    status: gr.Markdown
    zip: gr.DownloadButton
    slots: list[Slot] = field(default_factory=list)

    def outputs(self) -> list[Any]:
        per_slot = [c for s in self.slots for c in (s.column, s.audio, s.picture, s.download, s.keep)]
        return [self.results, self.status, self.zip, *per_slot]

    def show(self, result: Result) -> list[Any]:
        """Updates for `outputs()` that show `result`'s clips and hide the unused slots."""
        updates: list[Any] = [
            result.clips,
            result.message,
            gr.DownloadButton(value=str(result.zip_path), visible=True),
        ]
        for i in range(len(self.slots)):
            clip = result.clips[i] if i < len(result.clips) else None
            if clip is None:
                updates += [gr.Column(visible=False), None, None, gr.DownloadButton(value=None), gr.Button()]
                continue
            updates += [
                gr.Column(visible=True),
                gr.Audio(value=str(clip.path), label=clip.label),
                str(clip.path.with_suffix(".png")),
                gr.DownloadButton(value=str(clip.path)),
                gr.Button(value="Kept" if clip.kept else "Keep"),
            ]
        return updates


def results_grid(name: str) -> Grid:
    """The status line, the "download all" button and the player slots, two to a row."""
    # the progress bar is drawn over this line while sampling (the players are hidden until then)
    status = gr.Markdown(
        "No clips yet.", min_height=64, container=True, padding=True, elem_id=f"{name}-status"
    )
    zipped = gr.DownloadButton("Download all (zip)", visible=False, elem_id=f"{name}-zip", size="sm")
    grid = Grid(name=name, results=gr.State([]), status=status, zip=zipped)
    for first in range(0, MAX_CLIPS, 2):
        with gr.Row(equal_height=False):
            for i in range(first, first + 2):
                with gr.Column(visible=False, min_width=320, elem_classes="drumdiff-slot") as column:
                    audio = gr.Audio(
                        type="filepath",
                        interactive=False,
                        label=f"clip {i + 1}",
                        buttons=[],
                        elem_id=f"{name}-clip-{i}-audio",
                    )
                    picture = gr.Image(
                        type="filepath",
                        interactive=False,
                        show_label=False,
                        buttons=[],
                        elem_id=f"{name}-clip-{i}-picture",
                    )
                    with gr.Row():
                        download = gr.DownloadButton(
                            "Download WAV", size="sm", elem_id=f"{name}-clip-{i}-download"
                        )
                        keep = gr.Button("Keep", size="sm", elem_id=f"{name}-clip-{i}-keep")
                        use = gr.Button("Use as input", size="sm", elem_id=f"{name}-clip-{i}-use")
                grid.slots.append(Slot(column, audio, picture, download, keep, use))
    return grid


@dataclass
class SoundInput:
    """An upload / record field, a menu of this session's sounds, and a note for what happened to it."""

    audio: gr.Audio
    pick: gr.Dropdown
    note: gr.Markdown


def sound_input(prefix: str, label: str, *, record: bool = True) -> SoundInput:
    sources = ["upload", "microphone"] if record else ["upload"]
    audio = gr.Audio(sources=sources, type="filepath", label=label, elem_id=f"{prefix}-input")
    pick = gr.Dropdown([], value=None, label="or a sound from this session", elem_id=f"{prefix}-pick")
    note = gr.Markdown(elem_id=f"{prefix}-note")
    return SoundInput(audio, pick, note)


# ---------------------------------------------------------------------------------------------- tabs


@dataclass
class Tab:
    tab: gr.Tab
    button: gr.Button
    controls: Controls
    grid: Grid
    inputs: list[SoundInput] = field(default_factory=list)
    extra: dict[str, gr.components.Component] = field(default_factory=dict)


def generate_tab(studio: Studio) -> Tab:
    with gr.Tab("Generate", id="generate") as tab:
        ctl = controls(studio, prefix="generate", steps=DEFAULT_STEPS, n=4, any_class=False)
        button = gr.Button("Generate", variant="primary", elem_id="generate-button")
        grid = results_grid("generate")
    return Tab(tab, button, ctl, grid)


def vary_tab(studio: Studio) -> Tab:
    with gr.Tab("Vary", id="vary") as tab:
        gr.Markdown("Variations of a sound: noise it part of the way, then denoise (SDEdit).")
        source = sound_input("vary", "sound to vary")
        strength = gr.Slider(
            0.05,
            1.0,
            value=0.5,
            step=0.05,
            label="strength (0.1 stays close, 1.0 ignores the sound)",
            elem_id="vary-strength",
        )
        ctl = controls(studio, prefix="vary", steps=DEFAULT_EDIT_STEPS, n=4)
        button = gr.Button("Vary", variant="primary", elem_id="vary-button")
        grid = results_grid("vary")
    return Tab(tab, button, ctl, grid, [source], {"strength": strength})


def interpolate_tab(studio: Studio) -> Tab:
    with gr.Tab("Interpolate", id="interpolate") as tab:
        gr.Markdown("A blend from A to B: both are inverted to noise, the noises mixed, then decoded.")
        with gr.Row():
            with gr.Column():
                a = sound_input("interpolate-a", "A", record=False)
            with gr.Column():
                b = sound_input("interpolate-b", "B", record=False)
        frames = gr.Slider(2, MAX_CLIPS, value=5, step=1, label="frames (A and B included)")
        ctl = controls(studio, prefix="interpolate", steps=DEFAULT_INTERPOLATE_STEPS, n=None, seeded=False)
        button = gr.Button("Interpolate", variant="primary", elem_id="interpolate-button")
        grid = results_grid("interpolate")
    return Tab(tab, button, ctl, grid, [a, b], {"frames": frames})


def inpaint_tab(studio: Studio) -> Tab:
    model = studio.model
    whole_ms = 1000 * model.length / model.sample_rate
    with gr.Tab("Inpaint", id="inpaint") as tab:
        gr.Markdown("Keep the start of a sound (its attack) and regenerate the rest.")
        source = sound_input("inpaint", "sound whose start to keep")
        keep_ms = gr.Slider(
            1,
            max(1, int(whole_ms) - 1),
            value=min(DEFAULT_KEEP_MS, whole_ms / 2),
            step=1,
            label="keep the first ... ms",
            elem_id="inpaint-keep",
        )
        ctl = controls(studio, prefix="inpaint", steps=DEFAULT_EDIT_STEPS, n=4)
        button = gr.Button("Inpaint", variant="primary", elem_id="inpaint-button")
        grid = results_grid("inpaint")
    return Tab(tab, button, ctl, grid, [source], {"keep_ms": keep_ms})


@dataclass
class KitTab:
    """The Kit tab: the kit's values, its sampling controls, and what a kit request shows."""

    tab: gr.Tab
    pads: gr.CheckboxGroup
    defaults: gr.Button
    clear: gr.Button
    round_robins: gr.Slider
    name: gr.Textbox
    loudness: gr.Slider
    controls: Controls
    button: gr.Button
    status: gr.Markdown
    zip: gr.DownloadButton
    picture: gr.Image
    players: list[gr.Audio]

    def inputs(self) -> set[gr.components.Component]:
        return {self.pads, self.round_robins, self.name, self.loudness, *self.controls.inputs()}

    def chosen_pads(self, values: dict) -> list[str]:
        """The ticked pads in the order of the boxes (the browser lists them in the order they were ticked)."""
        ticked = set(values[self.pads] or [])
        return [name for _, name in pad_choices() if name in ticked]

    def outputs(self) -> list[Any]:
        return [self.status, self.zip, self.picture, *self.players]

    def show(self, result: KitResult) -> list[Any]:
        """Updates for `outputs()`: the summary, the zip, the picture and one player per pad's first take."""
        updates: list[Any] = [
            result.message,
            gr.DownloadButton(value=str(result.zip_path), visible=True),
            str(result.picture),
        ]
        for i in range(len(self.players)):
            if i < len(result.first_takes):
                label, path = result.first_takes[i]
                updates.append(gr.Audio(value=str(path), label=label, visible=True))
            else:
                updates.append(gr.Audio(value=None, visible=False))
        return updates


def pad_choices() -> list[tuple[str, str]]:
    """(label, short name) of every pad the Kit tab offers: the default kit's, then the others by note."""
    others = sorted((n for n in SHORT_NAMES if n not in DEFAULT_PADS), key=lambda n: SHORT_NAMES[n][0])
    return [(f"{SHORT_NAMES[n][1]} ({SHORT_NAMES[n][0]})", n) for n in (*DEFAULT_PADS, *others)]


def kit_tab(studio: Studio) -> KitTab:
    """Pads to make (the default kit ticked), takes per pad, name, level; a picture and a player per pad."""
    choices = pad_choices()
    with gr.Tab("Kit", id="kit") as tab:
        gr.Markdown(
            "A drum kit for samplers, as `drumdiff kit` makes it: a pad per General MIDI note, each from its "
            "class, loudness matched; SFZ, Hydrogen and Decent Sampler files and the WAVs, in one zip."
        )
        pads = gr.CheckboxGroup(choices, value=list(DEFAULT_PADS), label="pads (GM note)", elem_id="kit-pads")
        with gr.Row():
            defaults = gr.Button("Default pads", size="sm", elem_id="kit-default-pads")
            clear = gr.Button("No pads", size="sm", elem_id="kit-no-pads")
        with gr.Row():
            round_robins = gr.Slider(
                1, MAX_ROUND_ROBINS, value=1, step=1, label="takes per pad (round robins)",
                elem_id="kit-round-robins",
            )  # fmt: skip
            loudness = gr.Slider(
                *LOUDNESS_RANGE, value=DEFAULT_LOUDNESS_LUFS, step=1, label="loudness of every pad (LUFS)",
                elem_id="kit-loudness",
            )  # fmt: skip
            name = gr.Textbox("drumdiff kit", label="kit name", max_length=MAX_NAME, elem_id="kit-name")
        ctl = controls(studio, prefix="kit", steps=DEFAULT_EDIT_STEPS, n=None, classed=False)
        button = gr.Button("Make kit", variant="primary", elem_id="kit-button")
        # the progress bar is drawn over this line while sampling
        status = gr.Markdown("No kit yet.", min_height=64, container=True, padding=True, elem_id="kit-status")
        zipped = gr.DownloadButton("Download kit (zip)", visible=False, elem_id="kit-zip", size="sm")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                picture = gr.Image(
                    type="filepath", interactive=False, show_label=False, buttons=[], elem_id="kit-picture"
                )
            with gr.Column(scale=2):
                players = [
                    gr.Audio(
                        type="filepath",
                        interactive=False,
                        visible=False,
                        buttons=[],
                        label=f"pad {i + 1}",
                        elem_id=f"kit-pad-{i}-audio",
                    )
                    for i in range(len(choices))  # every pad the boxes offer
                ]
    defaults.click(lambda: list(DEFAULT_PADS), None, pads, queue=False)
    clear.click(lambda: [], None, pads, queue=False)
    return KitTab(
        tab=tab, pads=pads, defaults=defaults, clear=clear, round_robins=round_robins, name=name,
        loudness=loudness, controls=ctl, button=button, status=status, zip=zipped, picture=picture,
        players=players,
    )  # fmt: skip


@dataclass
class MapTab:
    tab: gr.Tab
    image: gr.Image
    points: gr.State
    picked: gr.State
    picked_audio: gr.Audio
    picked_note: gr.Markdown
    strength: gr.Slider
    n: gr.Slider
    more: gr.Button
    add: gr.File
    grid: Grid


def map_tab() -> MapTab:
    with gr.Tab("Map", id="map") as tab:
        gr.Markdown(
            "Every sound of this session (generated, uploaded, kept) placed by the shipped drum classifier: "
            "similar sounds lie close. Click a point to play it."
        )
        with gr.Row():
            with gr.Column(scale=3):
                image = gr.Image(
                    type="filepath", interactive=False, show_label=False, buttons=[], elem_id="map-image"
                )
            with gr.Column(scale=2):
                picked_note = gr.Markdown("Nothing picked yet.", elem_id="map-picked")
                picked_audio = gr.Audio(
                    type="filepath", interactive=False, autoplay=True, label="picked", elem_id="map-audio"
                )
                strength = gr.Slider(0.05, 1.0, value=0.4, step=0.05, label="how different")
                n = gr.Slider(1, MAX_CLIPS, value=4, step=1, label="clips")
                more = gr.Button("More like this", variant="primary", elem_id="map-more")
                add = gr.File(file_count="multiple", label="add your own sounds", elem_id="map-add")
        grid = results_grid("map")
    return MapTab(
        tab, image, gr.State([]), gr.State(None), picked_audio, picked_note, strength, n, more, add, grid
    )


@dataclass
class Collection:
    note: gr.Markdown
    zip: gr.DownloadButton


def collection() -> Collection:
    """Below the tabs: the clips kept in this session, and a zip of them."""
    with gr.Accordion("Kept sounds", open=True):
        note = gr.Markdown("Nothing kept yet: press Keep under a clip.", elem_id="kept-note")
        zipped = gr.DownloadButton("Download kept sounds (zip)", visible=False, elem_id="kept-zip", size="sm")
    return Collection(note, zipped)


# ---------------------------------------------------------------------------------------------- header


def model_summary(studio: Studio) -> str:
    model = studio.model
    name = model.path.stem if model.path is not None else "in-memory model"
    classes = ", ".join(model.class_names) if model.class_names else "no classes"
    seconds = model.length / model.sample_rate
    return (
        f"Model **{name}** ({classes}): {model.channels}-channel clips of {seconds:.2f} s at "
        f"{model.sample_rate} Hz, sampled on {model.device}. Uploads: audio files up to {MAX_UPLOAD_MB} MB."
    )
