"""Callbacks: the last checkpoint, pictures in the run folder (validation previews, training curves)
and encoder freezing."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from cropseg import plots
from cropseg.io import temporary_sibling

log = logging.getLogger(__name__)


class LastCheckpoint(Checkpoint):
    """``last.ckpt``: the whole training state at the end of every epoch, and when training is
    interrupted (Ctrl-C, or SIGTERM as a cluster sends before preempting a job).

    Lightning's ``ModelCheckpoint(save_last=True)`` (2.6) writes ``last.ckpt`` only in epochs
    that also save a best checkpoint, so a crash after the best epoch lost everything since.
    This callback keeps "last" apart from "best" (``ModelCheckpoint``, whose state — best score
    and path — travels inside this checkpoint). Written atomically: a kill during the write
    leaves the previous ``last.ckpt`` intact.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt", on_interrupt: bool = True) -> None:
        self.path = Path(dirpath) / filename
        self.on_interrupt = on_interrupt

    def save(self, trainer: pl.Trainer) -> None:
        # Every rank calls save_checkpoint (it synchronizes them); the strategy writes on rank 0 only.
        tmp = temporary_sibling(self.path)
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state: resumable
        if trainer.is_global_zero:
            os.replace(tmp, self.path)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # After this epoch's validation (and the best checkpoint's update), so its state is included.
        if not trainer.sanity_checking and not trainer.fast_dev_run:
            self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        if not self.on_interrupt or trainer.fast_dev_run or trainer.sanity_checking:
            return
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or trainer.global_step == 0:
            return
        if trainer.state.fn != "fit":
            return
        self.save(trainer)
        log.info("interrupted at epoch %d, step %d: saved %s", trainer.current_epoch, trainer.global_step, self.path)


class ValidationPreviews(pl.Callback):
    """A PNG of a few validation patches (RGB, label, prediction) every few epochs.

    The patches are the validation patches with the most cropland (ties by name), the same in
    every epoch so that pictures of successive epochs compare.
    """

    def __init__(self, num_samples: int = 4, every_n_epochs: int = 1) -> None:
        self.num_samples, self.every = num_samples, max(1, every_n_epochs)

    @staticmethod
    def choose(rp: np.ndarray, names: list[str], n: int) -> list[int]:
        """Indices of the ``n`` patches with the highest cropland fraction ``rp``, most first."""
        order = sorted(range(len(names)), key=lambda i: (-float(rp[i]), names[i]))
        return order[:n]

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.current_epoch % self.every:
            return
        dm = trainer.datamodule
        if dm is None or not len(getattr(dm, "val_set", [])):
            return
        val = dm.index["val"]
        chosen = self.choose(val.rp.to_numpy(), val.name.astype(str).tolist(), min(self.num_samples, len(dm.val_set)))
        items = [dm.val_set[i] for i in chosen]
        images = torch.stack([it["image"] for it in items])
        with torch.no_grad():
            probs = module.predict_proba(images.to(module.device)).cpu().numpy()
        out = Path(trainer.default_root_dir) / "previews" / f"epoch_{trainer.current_epoch:03d}.png"
        plots.patch_previews(out, images.numpy(), torch.stack([it["mask"] for it in items]).numpy(), probs,
                             module.bands, [it["name"] for it in items], title=f"epoch {trainer.current_epoch}",
                             threshold=module.threshold)


class TrainingCurves(pl.Callback):
    """``training_curves.png`` from the CSV log, redrawn after every validation and after the test."""

    def _draw(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.CSVLogger):
                logger.save()
                plots.training_curves(Path(logger.log_dir) / "metrics.csv",
                                      Path(trainer.default_root_dir) / "training_curves.png")
                return

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._draw(trainer)

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._draw(trainer)

    def on_test_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._draw(trainer)  # the held-out test score, a star after the last epoch


class FreezeEncoder(pl.Callback):
    """Fine-tuning: keep the encoder's weights (and batch-norm statistics) fixed for the first ``epochs``.

    The optimizer holds every parameter; frozen ones get no gradient, so Adam(W) leaves them
    (and their weight decay) alone until they thaw.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = int(epochs)

    def _encoder(self, module: Any):
        return getattr(getattr(module, "net", None), "encoder", None)

    def _set(self, module: Any, frozen: bool) -> None:
        enc = self._encoder(module)
        if enc is None:
            return
        for p in enc.parameters():
            p.requires_grad_(not frozen)

    def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
        self._set(module, trainer.current_epoch < self.epochs)

    def on_train_batch_start(self, trainer: Any, module: Any, batch, batch_idx: int) -> None:
        enc = self._encoder(module)
        if enc is not None and trainer.current_epoch < self.epochs:
            enc.eval()  # Lightning puts the model back in train mode after each validation

    def on_train_end(self, trainer: Any, module: Any) -> None:
        self._set(module, False)
