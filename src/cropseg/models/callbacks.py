"""Callbacks: pictures in the run folder (validation previews, training curves) and encoder freezing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from cropseg import plots


class ValidationPreviews(pl.Callback):
    """A PNG of a few validation patches (RGB, label, prediction) every few epochs."""

    def __init__(self, num_samples: int = 4, every_n_epochs: int = 1) -> None:
        self.num_samples, self.every = num_samples, max(1, every_n_epochs)

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.current_epoch % self.every:
            return
        dm = trainer.datamodule
        if dm is None or not len(getattr(dm, "val_set", [])):
            return
        n = min(self.num_samples, len(dm.val_set))
        # The patches with most cropland show the most; fixed choice so epochs compare.
        order = dm.index["val"].rp.to_numpy().argsort()[::-1]
        items = [dm.val_set[int(i)] for i in sorted(order[:n])]
        images = torch.stack([it["image"] for it in items])
        with torch.no_grad():
            probs = module.predict_proba(images.to(module.device)).cpu().numpy()
        out = Path(trainer.default_root_dir) / "previews" / f"epoch_{trainer.current_epoch:03d}.png"
        plots.patch_previews(out, images.numpy(), torch.stack([it["mask"] for it in items]).numpy(), probs,
                             module.bands, [it["name"] for it in items], title=f"epoch {trainer.current_epoch}")


class TrainingCurves(pl.Callback):
    """``training_curves.png`` from the CSV log, redrawn after every validation."""

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
