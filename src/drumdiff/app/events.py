"""The events of the `drumdiff app` page: each handler reads its components, asks the Studio, shows the result.

Handlers that sample share one concurrency group of size 1 (`MODEL_EVENTS`): concurrent users wait in Gradio's
queue. A bad input (a DrumdiffError) becomes the page's error message, never a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from drumdiff.app.actions import Result, Studio
from drumdiff.app.layout import Collection, Grid, KitTab, MapTab, Tab
from drumdiff.app.session import Clip, Library, clip_file, new_clip, read_upload, zip_clips
from drumdiff.app.soundmap import Embedder, MapPoint, draw_map, nearest
from drumdiff.errors import DrumdiffError
from drumdiff.pipeline import SamplingOptions

MODEL_EVENTS: dict[str, Any] = {"concurrency_id": "model", "concurrency_limit": 1}
MAP_EVENTS: dict[str, Any] = {"concurrency_id": "map", "concurrency_limit": 1}
# Gradio finds a handler's progress bar by a `gr.Progress` default value; one instance serves every request
# (it reports to the request it is called in).
PROGRESS = gr.Progress()


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show a DrumdiffError (bad input) as the page's error message, without a server traceback."""
    try:
        yield
    except DrumdiffError as error:
        raise gr.Error(str(error), print_exception=False) from error


def reporter(progress: gr.Progress) -> Callable[[int, int, str], None]:
    """A Studio progress callback that drives Gradio's progress bar."""

    def report(done: int, total: int, what: str) -> None:
        progress((done, total), desc=what, unit="steps" if what == "sampling" else "clips")

    return report


class Wiring:
    """Connects the page's components to one Studio (the model) and one Embedder (the map's classifier)."""

    def __init__(
        self, studio: Studio, embedder: Embedder, library: gr.State, tabs: gr.Tabs, kept: Collection
    ) -> None:
        self.studio = studio
        self.embedder = embedder
        self.library = library
        self.tabs = tabs
        self.kept = kept
        self.pickers: list[gr.Dropdown] = []  # every "a sound from this session" menu

    # -- the sampling tabs
    def generate(self, tab: Tab) -> None:
        def run(values: dict, progress=PROGRESS) -> list[Any]:
            with user_errors():
                result = self.studio.generate(
                    **tab.controls.request(values),
                    options=tab.controls.options(values),
                    progress=reporter(progress),
                )
            return self._show(values[self.library], tab.grid, result)

        self._sampling(tab, run)

    def vary(self, tab: Tab) -> None:
        source, strength = tab.inputs[0], tab.extra["strength"]

        def run(values: dict, progress=PROGRESS) -> list[Any]:
            with user_errors():
                clip, label = self._read(values[source.audio])
                result = self.studio.vary(
                    clip,
                    source=label,
                    strength=float(values[strength]),
                    **tab.controls.request(values),
                    options=tab.controls.options(values),
                    progress=reporter(progress),
                )
            return self._show(values[self.library], tab.grid, result)

        self._sampling(tab, run, {source.audio, strength})

    def inpaint(self, tab: Tab) -> None:
        source, keep_ms = tab.inputs[0], tab.extra["keep_ms"]

        def run(values: dict, progress=PROGRESS) -> list[Any]:
            with user_errors():
                clip, label = self._read(values[source.audio])
                result = self.studio.inpaint(
                    clip,
                    source=label,
                    keep_ms=float(values[keep_ms]),
                    **tab.controls.request(values),
                    options=tab.controls.options(values),
                    progress=reporter(progress),
                )
            return self._show(values[self.library], tab.grid, result)

        self._sampling(tab, run, {source.audio, keep_ms})

    def interpolate(self, tab: Tab) -> None:
        (a, b), frames = tab.inputs, tab.extra["frames"]

        def run(values: dict, progress=PROGRESS) -> list[Any]:
            with user_errors():
                clip_a, label_a = self._read(values[a.audio])
                clip_b, label_b = self._read(values[b.audio])
                result = self.studio.interpolate(
                    clip_a,
                    clip_b,
                    sources=(label_a, label_b),
                    frames=int(values[frames]),
                    **tab.controls.request(values),
                    options=tab.controls.options(values),
                    progress=reporter(progress),
                )
            return self._show(values[self.library], tab.grid, result)

        self._sampling(tab, run, {a.audio, b.audio, frames})

    def kit(self, tab: KitTab) -> None:
        def run(values: dict, progress=PROGRESS) -> list[Any]:
            with user_errors():
                result = self.studio.kit(
                    pads=tab.chosen_pads(values),
                    round_robins=int(values[tab.round_robins]),
                    seed=tab.controls.request(values)["seed"],
                    name=values[tab.name],
                    loudness_lufs=float(values[tab.loudness]),
                    options=tab.controls.options(values),
                    progress=reporter(progress),
                )
            return tab.show(result)

        tab.button.click(run, tab.inputs(), tab.outputs(), show_progress_on=tab.status, **MODEL_EVENTS)

    def _sampling(self, tab: Tab, run: Callable, extra: set | None = None) -> None:
        inputs = {self.library, *tab.controls.inputs(), *(extra or set())}
        outputs = [self.library, *tab.grid.outputs()]
        tab.button.click(run, inputs, outputs, show_progress_on=tab.grid.status, **MODEL_EVENTS)

    def _read(self, path: str | None) -> tuple[Any, str]:
        """An input field's sound in the model's format, and a label for file names."""
        from drumdiff.outputs import safe_label

        clip, _ = read_upload(path, self.studio.model.config)
        return clip, safe_label(Path(path).stem)

    def _show(self, library: Library, grid: Grid, result: Result) -> list[Any]:
        library.add(result.clips)
        return [library, *grid.show(result)]

    # -- the results grids: keep, use as input
    def grid(self, grid: Grid, vary: Tab) -> None:
        target = vary.inputs[0]
        for i, slot in enumerate(grid.slots):
            slot.keep.click(
                self._keeper(i),
                [grid.results, self.library],
                [self.library, slot.keep, self.kept.note, self.kept.zip],
            )
            slot.use.click(self._user(i), [grid.results], [target.audio, target.note, target.pick, self.tabs])

    def _keeper(self, i: int) -> Callable:
        def keep(results: list[Clip], library: Library) -> list[Any]:
            if i >= len(results):
                return [library, gr.Button(), gr.Markdown(), gr.DownloadButton()]
            library.keep(results[i])
            return [library, gr.Button(value="Kept"), *self._collection(library)]

        return keep

    def _collection(self, library: Library) -> list[Any]:
        """The kept sounds' list and zip."""
        kept = library.kept
        folder = self.studio.workspace.new_request("kept")
        zipped = zip_clips(folder / "drumdiff-kept.zip", kept, self.studio.workspace)
        names = ", ".join(c.label for c in kept)
        return [f"{len(kept)} kept: {names}", gr.DownloadButton(value=str(zipped), visible=True)]

    def _user(self, i: int) -> Callable:
        def use(results: list[Clip]) -> list[Any]:
            if i >= len(results):
                return [gr.Audio(), gr.Markdown(), gr.Dropdown(), gr.Tabs()]
            clip = results[i]
            path = clip_file(clip, self.studio.workspace)
            return [str(path), f"from this session: {clip.label}", None, gr.Tabs(selected="vary")]

        return use

    # -- the sound inputs: upload / record, or a sound from this session
    def inputs(self, tab: Tab) -> None:
        for source in tab.inputs:
            self.pickers.append(source.pick)
            for event in (source.audio.upload, source.audio.stop_recording):
                event(self._uploaded, [self.library, source.audio], [self.library, source.audio, source.note])
            source.pick.input(self._picked, [self.library, source.pick], [source.audio, source.note])
        pickers = [s.pick for s in tab.inputs]
        tab.tab.select(self._menus(len(pickers)), [self.library], pickers)

    def _uploaded(self, library: Library, path: str | None) -> list[Any]:
        """Check an upload at once: a bad one is cleared with a message naming what is wrong."""
        if path is None:
            return [library, None, ""]
        try:
            clip, done = read_upload(path, self.studio.model.config)
        except DrumdiffError as error:
            gr.Warning(str(error))
            return [library, None, f"**Not used:** {error}"]
        library.add([self._uploaded_clip(clip, path)])
        converted = f" ({', '.join(done)} to fit the model)" if done else ""
        return [library, gr.Audio(), f"{Path(path).name}: ready{converted}"]

    def _uploaded_clip(self, clip: Any, path: str) -> Clip:
        from drumdiff.outputs import safe_label

        uploaded = new_clip(
            clip,
            sample_rate=self.studio.model.sample_rate,
            label=safe_label(Path(path).stem),
            origin="uploaded",
        )
        clip_file(uploaded, self.studio.workspace)  # its WAV, in the model's format
        return uploaded

    def _picked(self, library: Library, clip_id: str | None) -> list[Any]:
        clip = library.get(clip_id)
        if clip is None:
            return [gr.Audio(), "That sound is no longer in this session."]
        return [str(clip_file(clip, self.studio.workspace)), f"from this session: {clip.label}"]

    def _menus(self, count: int) -> Callable:
        def menus(library: Library) -> Any:
            update = gr.Dropdown(choices=library.choices(), value=None)
            return update if count == 1 else [update] * count  # one output takes a bare value

        return menus

    # -- the map
    def map(self, tab: MapTab) -> None:
        draw_outputs = [tab.image, tab.points]
        tab.tab.select(self._draw, [self.library, tab.picked], draw_outputs, **MAP_EVENTS)
        tab.image.select(
            self._clicked,
            [self.library, tab.points],
            [tab.picked, tab.picked_audio, tab.picked_note, *draw_outputs],
            **MAP_EVENTS,
        )
        tab.add.upload(
            self._added, [self.library, tab.add], [self.library, tab.add, tab.picked_note], **MAP_EVENTS
        ).then(self._draw, [self.library, tab.picked], draw_outputs, **MAP_EVENTS)

        def more(values: dict, progress=PROGRESS) -> list[Any]:
            library = values[self.library]
            clip = library.get(values[tab.picked])
            with user_errors():
                if clip is None:
                    raise DrumdiffError("pick a sound on the map first")
                result = self.studio.vary(
                    clip.tensor(),
                    source=clip.label,
                    strength=float(values[tab.strength]),
                    class_name=clip.class_name if clip.class_name in self.studio.model.class_names else None,
                    n=int(values[tab.n]),
                    seed=None,
                    options=SamplingOptions(),
                    progress=reporter(progress),
                )
            return self._show(library, tab.grid, result)

        tab.more.click(
            more,
            {self.library, tab.picked, tab.strength, tab.n},
            [self.library, *tab.grid.outputs()],
            show_progress_on=tab.grid.status,
            **MODEL_EVENTS,
        ).then(self._draw, [self.library, tab.picked], draw_outputs, **MAP_EVENTS)

    def _draw(self, library: Library, picked: str | None) -> list[Any]:
        """A fresh map PNG of the session's sounds, and where each point landed."""
        self.embedder.embed(library.clips)
        path = self.studio.workspace.new_request("map") / "map.png"
        points = draw_map(path, library.clips, class_names=self.embedder.class_names, selected=picked)
        return [str(path), points]

    def _clicked(self, library: Library, points: list[MapPoint], evt: gr.SelectData) -> list[Any]:
        x, y = evt.index
        clip = library.get(nearest(points, x, y))
        if clip is None:
            return [None, None, "No sound there: click on a point.", gr.Image(), points]
        about = f"**{clip.label}** ({clip.origin}{', kept' if clip.kept else ''}), heard as {clip.heard_as}"
        return [clip.id, str(clip_file(clip, self.studio.workspace)), about, *self._draw(library, clip.id)]

    def _added(self, library: Library, paths: list[str] | None) -> list[Any]:
        """Sounds added on the Map tab: good ones join the session, bad ones are named."""
        notes = []
        for path in paths or []:
            try:
                clip, _ = read_upload(path, self.studio.model.config)
            except DrumdiffError as error:
                notes.append(f"**Not used:** {error}")
                continue
            library.add([self._uploaded_clip(clip, path)])
            notes.append(f"added {Path(path).name}")
        return [library, None, "\n\n".join(notes)]
