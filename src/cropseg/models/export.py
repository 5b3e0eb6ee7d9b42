"""Export a checkpoint for deployment without the training stack: ONNX and/or TorchScript.

``cropseg export model.ckpt out=model formats=onnx,torchscript`` writes ``model.onnx``,
``model.pt`` and ``model.json`` (the metadata: bands, normalization, patch size,
threshold, architecture, cropseg version). By default the exported graph takes the raw
bands in the checkpoint's order (N, C, H, W float32, reflectance as in the composites;
NaN allowed, treated as the original workflow did: 0) and returns the cropland
probability (N, 1, H, W); normalization, temperature and sigmoid are inside.
``raw=true`` exports the bare network (normalized input → logits) instead. The metadata is
also embedded: ONNX ``metadata_props`` and a ``cropseg.json`` extra file in TorchScript.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

import cropseg
from cropseg.command import Command
from cropseg.errors import UserError
from cropseg.io import atomic_path, ensure_output_file

FORMATS = ("onnx", "torchscript")


class Deployable(torch.nn.Module):
    """Raw bands → probability: NaN → 0, min/max normalization (+ clip), network, temperature, sigmoid."""

    def __init__(self, module) -> None:
        super().__init__()
        norm = module.normalization
        self.net = module.net
        lo = torch.tensor(norm.min, dtype=torch.float32).view(1, -1, 1, 1)
        span = torch.tensor(norm.max, dtype=torch.float32).view(1, -1, 1, 1) - lo
        self.register_buffer("lo", lo)
        self.register_buffer("span", span)
        self.clip = bool(norm.clip)
        self.temperature = float(module.hparams.get("temperature", 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nan_to_num(x, nan=0.0)
        x = (x - self.lo) / self.span
        if self.clip:
            x = x.clamp(0.0, 1.0)
        return torch.sigmoid(self.net(x) / self.temperature)


class RawNet(torch.nn.Module):
    def __init__(self, module) -> None:
        super().__init__()
        self.net = module.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def metadata(ckpt_path: Path, module, raw: bool) -> dict[str, Any]:
    hp = module.hparams
    return {
        "cropseg_version": cropseg.__version__, "checkpoint": ckpt_path.name, "arch": hp["arch"],
        "encoder": hp["encoder"], "bands": list(hp["bands"]), "normalization": dict(hp["normalization"]),
        "patch_size": int(hp["patch_size"]), "threshold": float(hp["threshold"]),
        "temperature": float(hp.get("temperature", 1.0)),
        "input": "normalized bands (N, C, H, W)" if raw else "raw bands in 'bands' order (N, C, H, W) float32, NaN = nodata",
        "output": "logits (N, 1, H, W)" if raw else "cropland probability (N, 1, H, W)",
        "spatial_multiple": 32,
    }


def export(ckpt: str | Path, out: str | Path, formats: tuple[str, ...] = FORMATS, raw: bool = False,
           opset: int = 17, check: bool = True) -> dict[str, Path]:
    """Export ``ckpt`` to ``out`` + ``.onnx`` / ``.pt`` / ``.json``; returns the written paths."""
    from .checkpoint import load_model

    ckpt, out = Path(ckpt), Path(out)
    if out.suffix in (".onnx", ".pt", ".json"):
        out = out.with_suffix("")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UserError(f"formats: {unknown[0]!r} is not known; choose from: {', '.join(FORMATS)}")
    module = load_model(ckpt).float()
    if module.hparams.get("channels_last"):
        module.net = module.net.to(memory_format=torch.contiguous_format)
    meta = metadata(ckpt, module, raw)
    wrapped = (RawNet(module) if raw else Deployable(module)).eval()
    size = int(meta["patch_size"])
    example = torch.rand(1, len(meta["bands"]), size, size)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out.parent}: cannot create ({err.strerror or err})") from None
    written: dict[str, Path] = {}
    with torch.no_grad():
        expected = wrapped(example)
    if "torchscript" in formats:
        path = out.with_suffix(".pt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(wrapped, example)
        with atomic_path(path) as tmp:
            torch.jit.save(traced, str(tmp), _extra_files={"cropseg.json": json.dumps(meta)})
        if check:
            with torch.no_grad():
                got = torch.jit.load(str(path))(example)
            _compare("TorchScript", got, expected)
        written["torchscript"] = path
    if "onnx" in formats:
        try:
            import onnx
        except ImportError:
            raise UserError("ONNX export needs the onnx package: pip install 'cropseg[export]' (or onnx)") from None
        path = out.with_suffix(".onnx")
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, (example,), str(tmp), input_names=["bands"], output_names=["probability" if not raw else "logits"],
                              dynamic_axes={"bands": {0: "batch", 2: "height", 3: "width"},
                                            ("probability" if not raw else "logits"): {0: "batch", 2: "height", 3: "width"}},
                              opset_version=opset, dynamo=False)
            model = onnx.load(str(tmp))
            for k, v in meta.items():
                entry = model.metadata_props.add()
                entry.key, entry.value = k, json.dumps(v) if not isinstance(v, str) else v
            onnx.save(model, str(tmp))
        if check:
            try:
                import onnxruntime as ort
            except ImportError:
                ort = None
            if ort is not None:
                sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                got = sess.run(None, {"bands": example.numpy()})[0]
                _compare("ONNX", torch.from_numpy(got), expected)
        written["onnx"] = path
    meta_path = out.with_suffix(".json")
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(meta | {"files": {k: v.name for k, v in written.items()}}, indent=2))
    written["metadata"] = meta_path
    return written


def _compare(kind: str, got: torch.Tensor, expected: torch.Tensor) -> None:
    err = float((got.float() - expected.float()).abs().max())
    if err > 1e-3:
        raise RuntimeError(f"{kind} export differs from the PyTorch model by {err:.2g}")


def run(cfg: dict) -> int:
    out = cfg["out"] or str(Path(cfg["ckpt"]).with_suffix(""))
    ensure_output_file(Path(out).with_name(Path(out).name + ".json"), "out")
    written = export(cfg["ckpt"], out, tuple(cfg["formats"]), cfg["raw"], cfg["opset"], cfg["check"])
    print("cropseg export: " + ", ".join(f"{k} -> {v}" for k, v in written.items()))
    return 0


main = Command("cropseg export", "export", run, "Export a checkpoint to ONNX and/or TorchScript.", ("ckpt",)).main


if __name__ == "__main__":
    raise SystemExit(main())
