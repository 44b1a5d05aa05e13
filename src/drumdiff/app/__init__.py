"""`drumdiff app`: a local web page to audition, vary, map and download sounds (needs `drumdiff[app]`).

    from drumdiff.app import serve
    serve(drumdiff.load_model("my.safetensors"), host="127.0.0.1", port=7860)

Offline by construction: Gradio's analytics and version check are off, there is no share link, the theme
uses system fonts, and the server listens on 127.0.0.1 unless told otherwise. Every file a request writes goes
to one private temporary folder (uploads too: it is Gradio's cache), removed when the server stops.
Gradio is imported only inside `serve` (after its environment is set), never by `import drumdiff`.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING

from drumdiff.app.session import MAX_UPLOAD_MB, REQUEST_MAX_AGE_S, Workspace

if TYPE_CHECKING:
    from drumdiff.pipeline import DrumPipeline

MAX_QUEUE = 32  # requests waiting for the model; more are refused with "the queue is full"

# Set before Gradio is imported: some of its modules read them at import time.
OFFLINE_ENVIRONMENT = {
    "GRADIO_ANALYTICS_ENABLED": "False",  # no telemetry, no version check
    "HF_HUB_OFFLINE": "1",  # Gradio imports huggingface_hub: never let it look anything up
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def serve(
    model: DrumPipeline,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    classifier: str | os.PathLike | None = None,
) -> None:
    """Serve the page until interrupted (Ctrl-C or SIGTERM), then remove every file it wrote."""
    workspace = Workspace()
    os.environ.update(OFFLINE_ENVIRONMENT)
    os.environ["GRADIO_TEMP_DIR"] = str(workspace.gradio_cache)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # so that `kill` also cleans up
    print(
        f"drumdiff app: files of this server go to {workspace.root} (removed when it stops)", file=sys.stderr
    )
    try:
        from drumdiff.app.actions import Studio
        from drumdiff.app.layout import CSS, theme
        from drumdiff.app.page import build_app
        from drumdiff.app.soundmap import Embedder

        demo = build_app(
            Studio(model, workspace), Embedder(classifier), delete_cache=(600, REQUEST_MAX_AGE_S)
        )
        demo.queue(max_size=MAX_QUEUE, default_concurrency_limit=2)
        demo.launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            max_file_size=f"{MAX_UPLOAD_MB}mb",
            footer_links=[],
            theme=theme(),
            css=CSS,
            show_error=True,
            enable_monitoring=False,
            mcp_server=False,
            pwa=False,
            ssr_mode=False,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        workspace.cleanup()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


__all__ = ["serve"]
