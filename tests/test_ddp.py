"""DDP with two CPU processes (gloo): the stratified sampler splits one draw across ranks."""

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
        sampler = trainer.train_dataloader.sampler
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps({
            "world_size": trainer.world_size, "indices": list(iter(sampler)),
            "global": sampler.global_indices().tolist()}))


def test_ddp_two_cpu_processes_split_the_sampler(tmp_path):
    probe = tmp_path / "probe"
    args = [a for a in tiny_demo_overrides(tmp_path) if not a.startswith("paths.output_dir")] + [
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "logger=csv", "callbacks.previews=null",
        "+callbacks.rank_probe._target_=test_ddp.RankProbe", f"+callbacks.rank_probe.out={probe}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "cropseg.train", *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["global"] == r1["global"]  # one global draw, the same on both ranks
    assert r0["indices"] == r0["global"][0::2] and r1["indices"] == r1["global"][1::2]
    assert len(r0["indices"]) == len(r1["indices"]) == 4  # epoch_length 8 over 2 ranks
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1  # both ranks write into one run folder
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["best_checkpoint"].endswith(".ckpt")
    assert (runs[0] / "environment.json").exists()
