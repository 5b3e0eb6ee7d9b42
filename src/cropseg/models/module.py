"""The LightningModule: any SMP architecture × encoder, losses and metrics by name.

Its hyperparameters fully describe the model (architecture, input spec, patch size,
threshold, training config), so a checkpoint alone is enough to predict; prediction loads
it without Lightning (cropseg.models.checkpoint.load_cropland_model).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Mapping

import pytorch_lightning as pl
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (BinaryAccuracy, BinaryCohenKappa, BinaryF1Score, BinaryJaccardIndex,
                                         BinaryPrecision, BinaryRecall)

import cropseg
from cropseg.bands import DEFAULT_BANDS
from cropseg.data.transforms import IGNORE
from cropseg.errors import UserError, choose

from .checkpoint import CHECKPOINT_FORMAT
from .losses import CombinedLoss
from .network import build_network, probability
from .preprocess import InputSpec

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def metric_collection(prefix: str, threshold: float) -> MetricCollection:
    kw = dict(threshold=threshold, ignore_index=int(IGNORE))
    return MetricCollection({
        "iou": BinaryJaccardIndex(**kw), "f1": BinaryF1Score(**kw), "precision": BinaryPrecision(**kw),
        "recall": BinaryRecall(**kw), "accuracy": BinaryAccuracy(**kw), "kappa": BinaryCohenKappa(**kw),
    }, prefix=prefix)


class SegmentationModule(pl.LightningModule):
    def __init__(
        self,
        arch: str = "unet",
        encoder: str = "resnet34",
        encoder_weights: str | None = None,
        input_spec: Mapping[str, Any] | None = None,
        patch_size: int = 192,
        loss: str | Mapping[str, float] = "bce+dice",
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        threshold: float = 0.5,
        temperature: float = 1.0,
        arch_kwargs: Mapping[str, Any] | None = None,
        channels_last: bool = False,
        train_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        spec = InputSpec.from_dict(input_spec) if input_spec is not None else InputSpec.build(DEFAULT_BANDS)
        self.save_hyperparameters({
            "arch": arch, "encoder": encoder, "encoder_weights": encoder_weights, "input_spec": spec.to_dict(),
            "patch_size": int(patch_size),
            "loss": loss if isinstance(loss, str) else dict(loss), "optimizer": dict(optimizer or {"name": "adamw", "lr": 3e-4}),
            "scheduler": dict(scheduler) if scheduler else None, "threshold": float(threshold),
            "temperature": float(temperature), "arch_kwargs": dict(arch_kwargs or {}), "channels_last": channels_last,
            "train_config": train_config,
        })
        self.spec = spec
        self.net = build_network(arch, encoder, encoder_weights, len(spec.bands), arch_kwargs)
        self.loss_fn = CombinedLoss(loss)
        self.train_metrics = metric_collection("train/", threshold)
        self.val_metrics = metric_collection("val/", threshold)
        self.test_metrics = metric_collection("test/", threshold)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    # -- what a checkpoint says about itself ------------------------------------------------
    @property
    def bands(self) -> list[str]:
        return list(self.spec.bands)

    @property
    def threshold(self) -> float:
        return float(self.hparams.threshold)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "SegmentationModule":
        """The LightningModule of a checkpoint of any format (for ``Trainer.test``/``validate``);
        its hyperparameters come through cropseg.models.checkpoint.upgrade, so old ones load."""
        from .checkpoint import read_checkpoint

        ckpt = read_checkpoint(path)
        hp = dict(ckpt["hyper_parameters"], encoder_weights=None)  # the weights come from the checkpoint
        known = inspect.signature(cls.__init__).parameters
        module = cls(**{k: v for k, v in hp.items() if k in known})
        module.load_state_dict(ckpt["state_dict"])
        return module.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1, H, W) for normalized images (N, C, H, W)."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated cropland probability of normalized images (what the loaders yield)."""
        return probability(self(x), float(self.hparams.temperature))

    # -- training ---------------------------------------------------------------------------
    def _step(self, batch: dict, stage: str, metrics: MetricCollection) -> torch.Tensor:
        logits = self(batch["image"])
        target = batch["mask"]
        loss, parts = self.loss_fn(logits.float(), target)
        bs = target.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=stage == "train", on_epoch=True, batch_size=bs,
                 sync_dist=stage != "train")
        for name, value in parts.items():
            if len(parts) > 1:
                self.log(f"{stage}/loss_{name}", value, on_step=False, on_epoch=True, batch_size=bs,
                         sync_dist=stage != "train")
        metrics.update(torch.sigmoid(logits.detach().float()), target.long())
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_metrics)

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_metrics.compute())
        self.train_metrics.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val", self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        iou = values.pop("val/iou")
        self.log_dict(values, sync_dist=True)
        self.log("val/iou", iou, prog_bar=True, sync_dist=True)
        self.val_metrics.reset()

    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test", self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    def configure_optimizers(self) -> Any:
        opt_cfg = dict(self.hparams.optimizer)
        cls = choose("optimizer", opt_cfg.pop("name", "adamw"), OPTIMIZERS, key="optimizer.name")
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = cls(params, **opt_cfg)
        sched = dict(self.hparams.scheduler or {})
        name = sched.pop("name", None)
        if not name or name == "none":
            return optimizer
        monitor = sched.pop("monitor", "val/loss")
        interval = sched.pop("interval", "epoch")
        if name == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **sched)
        elif name == "cosine":
            t_max = sched.pop("T_max", None) or max(1, int(self.trainer.max_epochs or 1))
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, **sched)
        elif name == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=opt_cfg.get("lr", 3e-4), total_steps=int(self.trainer.estimated_stepping_batches), **sched)
            interval = "step"
        else:
            raise UserError(f"scheduler.name={name!r} is not known; choose one of: none, plateau, cosine, onecycle")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": monitor, "interval": interval}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["cropseg"] = {"format": CHECKPOINT_FORMAT, "version": cropseg.__version__}
