"""Export a checkpoint for deployment without the training stack: ONNX and/or TorchScript.

``cropseg export model.ckpt out=model formats=onnx,torchscript`` writes ``model.onnx``,
``model.pt`` and ``model.json`` (the metadata: input spec, patch size, threshold,
architecture, cropseg version). By default the exported graph is the checkpoint's
:class:`~cropseg.models.network.CroplandModel` — the module prediction runs — so it takes
the raw bands in the checkpoint's order (N, C, H, W float32, physical units as in the
composites; NaN = nodata, handled as in training) and returns the cropland probability
(N, 1, H, W), NaN where the input had no data; normalization, temperature and sigmoid are
inside. Each export is compared with PyTorch on an input with nodata holes.
``raw=true`` exports the bare network (normalized input → logits) instead. The metadata is
also embedded: ONNX ``metadata_props`` and a ``cropseg.json`` extra file in TorchScript.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

import cropseg
from cropseg.command import Command
from cropseg.errors import UserError
from cropseg.io import atomic_path, ensure_output_file

FORMATS = ("onnx", "torchscript")
log = logging.getLogger(__name__)


class RawNet(torch.nn.Module):
    def __init__(self, module) -> None:
        super().__init__()
        self.net = module.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def metadata(ckpt_path: Path, model, card, raw: bool) -> dict[str, Any]:
    return {
        "cropseg_version": cropseg.__version__, "checkpoint": ckpt_path.name, "arch": card.arch,
        "encoder": card.encoder, "bands": list(model.spec.bands), "input_spec": model.spec.to_dict(),
        "patch_size": card.patch_size, "threshold": card.threshold, "temperature": card.temperature,
        "input": "network input: normalized bands, nodata 0 (N, C, H, W)" if raw
        else "raw bands in 'bands' order (N, C, H, W) float32, physical units, NaN = nodata",
        "output": "logits (N, 1, H, W)" if raw else "cropland probability (N, 1, H, W), NaN where the input had no data",
        "spatial_multiple": 32,
    }


def example_input(bands: int, size: int, seed: int = 0) -> torch.Tensor:
    """Raw-looking bands with nodata holes: what a comparison of exports must cover."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, bands, size, size, generator=g)
    x[0, :, : size // 4, : size // 3] = float("nan")  # a corner of nodata
    x[1, 0, size // 2:, size // 2:] = float("nan")  # one band missing
    return x


def export(ckpt: str | Path, out: str | Path, formats: tuple[str, ...] = FORMATS, raw: bool = False,
           opset: int = 17, check: bool = True) -> dict[str, Path]:
    """Export ``ckpt`` to ``out`` + ``.onnx`` / ``.pt`` / ``.json``; returns the written paths."""
    from .checkpoint import load_cropland_model

    ckpt, out = Path(ckpt), Path(out)
    if out.suffix in (".onnx", ".pt", ".json"):
        out = out.with_suffix("")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UserError(f"formats: {unknown[0]!r} is not known; choose from: {', '.join(FORMATS)}")
    model, card = load_cropland_model(ckpt)
    model = model.float()
    meta = metadata(ckpt, model, card, raw)
    wrapped = (RawNet(model) if raw else model).eval()
    size = int(meta["patch_size"])
    example = example_input(len(meta["bands"]), size)
    if raw:
        example = model.network_input(example)[0]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out.parent}: cannot create ({err.strerror or err})") from None
    written: dict[str, Path] = {}
    checked: list[str] = []
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
            checked.append("torchscript")
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
            proto = onnx.load(str(tmp))
            for k, v in meta.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = k, json.dumps(v) if not isinstance(v, str) else v
            onnx.save(proto, str(tmp))
        if check:
            try:
                import onnxruntime as ort
            except ImportError:
                ort = None
                log.warning("ONNX export NOT compared with PyTorch: onnxruntime is not installed "
                            "(pip install onnxruntime, or 'cropseg[dev]')")
            if ort is not None:
                sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                got = sess.run(None, {"bands": example.numpy()})[0]
                _compare("ONNX", torch.from_numpy(got), expected)
                checked.append("onnx")
        written["onnx"] = path
    meta_path = out.with_suffix(".json")
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(meta | {"files": {k: v.name for k, v in written.items()},
                                          "compared_with_pytorch": checked}, indent=2))
    written["metadata"] = meta_path
    return written


def _compare(kind: str, got: torch.Tensor, expected: torch.Tensor) -> None:
    """Same nodata (NaN) pixels and probabilities within 1e-4 elsewhere, or the export is wrong."""
    got, expected = got.float(), expected.float()
    if not torch.equal(torch.isnan(got), torch.isnan(expected)):
        raise RuntimeError(f"{kind} export marks other pixels as nodata than the PyTorch model")
    ok = ~torch.isnan(expected)
    err = float((got[ok] - expected[ok]).abs().max()) if ok.any() else 0.0
    if err > 1e-4:
        raise RuntimeError(f"{kind} export differs from the PyTorch model by {err:.2g}")


def run(cfg: dict) -> int:
    out = cfg["out"] or str(Path(cfg["ckpt"]).with_suffix(""))
    ensure_output_file(Path(out).with_name(Path(out).name + ".json"), "out")
    written = export(cfg["ckpt"], out, tuple(cfg["formats"]), cfg["raw"], cfg["opset"], cfg["check"])
    print("cropseg export: " + ", ".join(f"{k} -> {v}" for k, v in written.items()))
    checked = json.loads(written["metadata"].read_text())["compared_with_pytorch"]
    unchecked = [k for k in written if k in FORMATS and k not in checked]
    if checked:
        print(f"  compared with PyTorch on raw bands with nodata holes: {', '.join(checked)} (max diff <= 1e-4)")
    if unchecked:
        print(f"  NOT compared with PyTorch: {', '.join(unchecked)}"
              + (" (onnxruntime is not installed: pip install onnxruntime)" if "onnx" in unchecked and cfg["check"]
                 else " (check=false)"))
    return 0


main = Command("cropseg export", "export", run, "Export a checkpoint to ONNX and/or TorchScript.", ("ckpt",)).main


if __name__ == "__main__":
    raise SystemExit(main())
