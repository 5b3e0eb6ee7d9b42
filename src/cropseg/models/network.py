"""The network and the model that maps raw bands to cropland probability, with torch and SMP alone.

Prediction, export, calibration and evaluation load a :class:`CroplandModel` from a
checkpoint without importing Lightning (seconds of start-up paid by every scene an Earth
Engine follow loop hands to predict); training wraps the same network in
cropseg.models.module.SegmentationModule.
"""

from __future__ import annotations

from typing import Any, Mapping

import segmentation_models_pytorch as smp
import torch

from cropseg.errors import UserError, choose

from .preprocess import InputSpec, Preprocess

ARCHITECTURES = {
    "unet": "Unet", "unetplusplus": "UnetPlusPlus", "fpn": "FPN", "pspnet": "PSPNet", "deeplabv3": "DeepLabV3",
    "deeplabv3plus": "DeepLabV3Plus", "manet": "MAnet", "linknet": "Linknet", "pan": "PAN", "upernet": "UPerNet",
    "segformer": "Segformer",
}


def check_encoder(name: str) -> None:
    if name.startswith("tu-"):
        return
    valid = smp.encoders.get_encoder_names()
    if name not in valid:
        raise UserError(f"model.encoder={name!r} is not a known encoder; choose one of: {', '.join(valid)} "
                        "(or 'tu-<timm model name>')")


def build_network(arch: str, encoder: str, encoder_weights: str | None, in_channels: int,
                  arch_kwargs: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """Any SMP architecture × encoder, one output channel (cropland logits)."""
    choose("architecture", arch, ARCHITECTURES, key="model.arch")
    check_encoder(encoder)
    try:
        return smp.create_model(arch.lower(), encoder_name=encoder, encoder_weights=encoder_weights,
                                in_channels=in_channels, classes=1, **dict(arch_kwargs or {}))
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise UserError(f"model: {arch} with encoder {encoder} (weights {encoder_weights}) cannot be built: {err}") from None


def probability(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Calibrated cropland probability: the temperature-scaled sigmoid of float32 logits."""
    return torch.sigmoid(logits.float() / temperature)


class CroplandModel(torch.nn.Module):
    """Raw bands (N, C, H, W) in the spec's order → cropland probability (N, 1, H, W), NaN at nodata.

    The one probability function: scene prediction calls it, and it is what export writes
    to ONNX and TorchScript, so the three cannot disagree.
    """

    def __init__(self, spec: InputSpec, net: torch.nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.spec = spec
        self.preprocess = Preprocess(spec)
        self.net = net
        self.temperature = float(temperature)

    def network_input(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the network sees (normalized, nodata zeroed) and the nodata mask."""
        return self.preprocess(raw)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        x, nodata = self.preprocess(raw)
        p = probability(self.net(x), self.temperature)
        return torch.where(nodata, torch.full_like(p, float("nan")), p)
