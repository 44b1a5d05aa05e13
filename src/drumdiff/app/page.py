"""The whole `drumdiff app` page: the layout of `drumdiff.app.layout` wired by `drumdiff.app.events`."""

from __future__ import annotations

import gradio as gr

from drumdiff.app.actions import Studio
from drumdiff.app.events import Wiring
from drumdiff.app.layout import (
    collection,
    generate_tab,
    inpaint_tab,
    interpolate_tab,
    kit_tab,
    map_tab,
    model_summary,
    vary_tab,
)
from drumdiff.app.session import Library
from drumdiff.app.soundmap import Embedder


def build_app(
    studio: Studio, embedder: Embedder, *, delete_cache: tuple[int, int] | None = None
) -> gr.Blocks:
    """Tabs Generate, Vary, Interpolate, Inpaint, Kit and Map, with the session's kept sounds below them."""
    with gr.Blocks(title="drumdiff", analytics_enabled=False, delete_cache=delete_cache) as demo:
        library = gr.State(Library())  # one per browser tab
        gr.Markdown(f"## drumdiff\n{model_summary(studio)}")
        with gr.Tabs() as tabs:
            generate = generate_tab(studio)
            vary = vary_tab(studio)
            interpolate = interpolate_tab(studio)
            inpaint = inpaint_tab(studio)
            kit = kit_tab(studio)
            soundmap = map_tab()
        kept = collection()

        wire = Wiring(studio, embedder, library, tabs, kept)
        wire.generate(generate)
        wire.vary(vary)
        wire.interpolate(interpolate)
        wire.inpaint(inpaint)
        wire.kit(kit)
        wire.map(soundmap)
        for tab in (generate, vary, interpolate, inpaint):
            wire.grid(tab.grid, vary)
        wire.grid(soundmap.grid, vary)
        for tab in (vary, interpolate, inpaint):
            wire.inputs(tab)
    return demo
