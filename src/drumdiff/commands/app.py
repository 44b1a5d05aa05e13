"""`drumdiff app`: serve the web page (docs/app.md). Needs the `[app]` extra (Gradio).

Nothing heavy is imported here at module level: Gradio and the model load inside the handler, the model first,
so that a missing or bad model is a one-line error (exit 2) before any server starts.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `app` sub-command."""
    parser = subparsers.add_parser(
        "app",
        help="a local web page: generate, vary, interpolate, inpaint, map and download sounds",
        description=(
            "Serve a local web page (Gradio) over a model. It listens on 127.0.0.1 unless --host says "
            "otherwise, makes no request to the internet, and removes every file it wrote when it stops."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument(
        "--model", default=None, help="model name or .safetensors path (default: shipped model)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of `drumdiff app`: check the flags, load the model, then serve until Ctrl-C."""
    from drumdiff.errors import DrumdiffError

    if not 0 < args.port < 65536:
        raise DrumdiffError(f"--port must be between 1 and 65535, got {args.port}")
    if args.threads is not None and args.threads < 1:
        raise DrumdiffError(f"--threads must be at least 1, got {args.threads}")
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise DrumdiffError('the web page needs Gradio: pip install "drumdiff[app]"')
    import torch

    from drumdiff.pipeline import load_model

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device)
    from drumdiff.app import serve

    print(f"drumdiff app: model {model.path} on {model.device}", file=sys.stderr)
    serve(model, host=args.host, port=args.port)
    return 0
