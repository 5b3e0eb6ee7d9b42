"""DDP with two CPU processes (gloo): each rank oversamples its own share of the patches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytorch_lightning as pl

from conftest import tiny_demo_overrides


class RankProbe(pl.Callback):
    """Writes what each rank's training sampler yields (used inside the DDP processes)."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def on_train_epoch_start(self, trainer, module) -> None:
        self.names = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.names += list(batch["name"])  # what this rank really trained on

    def on_train_epoch_end(self, trainer, module) -> None:
        sampler = trainer.train_dataloader.sampler
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.json").write_text(json.dumps({
            "world_size": trainer.world_size, "indices": list(iter(sampler)), "names": self.names,
            "shares": [s.tolist() for s in sampler.shares()]}))


def test_ddp_two_cpu_processes_train_on_disjoint_patches(tmp_path):
    probe = tmp_path / "probe"
    # Oversampling at full strength draws with replacement: 8 draws per rank from 9 patches each.
    args = [a for a in tiny_demo_overrides(tmp_path) if not a.startswith("paths.output_dir")] + [
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "logger=csv", "callbacks.previews=null",
        "data.oversample=1.0", "data.epoch_length=16", "trainer.max_epochs=2",
        "+callbacks.rank_probe._target_=test_ddp.RankProbe", f"+callbacks.rank_probe.out={probe}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "cropseg.train", *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    for epoch in (0, 1):
        r0, r1 = (json.loads((probe / f"rank{r}_epoch{epoch}.json").read_text()) for r in (0, 1))
        assert r0["world_size"] == r1["world_size"] == 2
        assert r0["shares"] == r1["shares"]  # both ranks deal the patches alike
        assert len(r0["indices"]) == len(r1["indices"]) == 8  # epoch_length 16 over 2 ranks
        # Every patch on at most one rank in an epoch: the patches trained on, not only the draw slots.
        assert len(r0["names"]) == len(r1["names"]) == 8
        assert set(r0["names"]) and not set(r0["names"]) & set(r1["names"])
        assert set(r0["indices"]) <= set(r0["shares"][0]) and set(r1["indices"]) <= set(r1["shares"][1])
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1  # both ranks write into one run folder
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["best_checkpoint"].endswith(".ckpt")
    assert (runs[0] / "environment.json").exists()
