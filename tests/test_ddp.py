"""Lightning DDP on CPU (gloo): two processes at batch 2 take the same step as one process at batch 4.

The data stream gives each example its clip, noise and t by its global position, so the two ranks together
see exactly the single process's batch; DDP averages their gradients, so the updates agree to float rounding.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import require
from tests.test_training import _prepare

DRIVER = """
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from drumdiff.training.run import TrainRequest, train

data, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]


class SaveWeights(pl.Callback):
    def on_train_end(self, trainer, module):
        state = {k: v.detach().cpu().clone() for k, v in module.net.state_dict().items()}
        torch.save(state, out / f"{mode}-rank{trainer.global_rank}.pt")


ddp = mode == "ddp"
overrides = dict(
    preset="tiny", max_steps=1, batch_size=2 if ddp else 4, lr=1e-2, warmup_steps=1, checkpoint_every=1000,
    preview_every=-1, logger="none", devices=2 if ddp else 1, strategy="ddp" if ddp else "auto", num_workers=0,
)
train(TrainRequest(data_dir=data, run_dir=out / f"run-{mode}", overrides=overrides), callbacks=[SaveWeights()])
"""


def test_ddp_two_cpu_processes_match_one_process(tmp_path: Path) -> None:
    require("lightning")
    data = _prepare(tmp_path, {"kick": 6, "snare": 6})
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    for mode in ("single", "ddp"):
        done = subprocess.run(
            [sys.executable, str(driver), str(data), str(tmp_path), mode],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]

    single = torch.load(tmp_path / "single-rank0.pt", weights_only=True)
    rank0 = torch.load(tmp_path / "ddp-rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "ddp-rank1.pt", weights_only=True)
    torch.manual_seed(0)  # the weights before the step, as train() makes them (seed 0)
    from drumdiff.config import load_preset
    from drumdiff.nn.unet1d import UNet1d

    initial = UNet1d(load_preset("tiny").replace(length=2048, num_classes=2)).state_dict()
    moved = max(float((single[k] - initial[k]).abs().max()) for k in single)
    assert moved > 1e-3, "the step should move the weights"
    for key in single:
        assert torch.equal(rank0[key], rank1[key]), f"ranks disagree on {key}"
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-4, atol=1e-5, msg=f"{key} differs")
