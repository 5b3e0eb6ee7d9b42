"""Quicklooks: small PNG previews of a scene and its cropland map, to see a result without a GIS.

Everything here reads **decimated** rasters (rasterio's ``out_shape``: GDAL reads only what
the small picture needs, through its bounded block cache), so a preview of a scene of any
size costs a few MB and never holds the scene. Used by prediction (``quicklook=true``:
``{stem}_cropland.png`` beside each map) and by ``cropseg prepare chips`` (where the chips
were cut, cropseg.data.chips).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cropseg.bands import canonical_band
from cropseg.maps import NODATA, PROB_SCALE

#: Longest side of a quicklook in pixels (what a browser or a report shows without scrolling).
MAX_SIDE = 800
CROPLAND_COLOUR = (1.0, 0.85, 0.0)  # yellow: stands out on vegetation, soil and water alike
NODATA_COLOUR = (0.55, 0.55, 0.55)


def quicklook_path(map_path: str | Path) -> Path:
    """Where a map's quicklook goes: beside it, same stem, ``.png`` (``{stem}_cropland.png``)."""
    return Path(map_path).with_suffix(".png")


def preview_shape(height: int, width: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(rows, cols) of a preview no larger than ``max_side`` on its longest side, never upsampled."""
    f = min(1.0, max_side / max(height, width))
    return max(1, round(height * f)), max(1, round(width * f))


def _rgb_bands(src, plan: Any = None) -> list[tuple[int, float | None]]:
    """1-based (index, nodata) of the R, G, B bands: the band plan's, else found by description, else band 1."""
    if plan is not None:
        found = {n: (i, nd) for i, n, nd in zip(plan.read, plan.read_names, plan.nodata)}
        if all(b in found for b in ("R", "G", "B")):
            return [found[b] for b in ("R", "G", "B")]
    sensor = getattr(plan, "sensor", None)
    nodata = list(src.nodatavals or [None] * src.count)
    by_name: dict[str, int] = {}
    for i, desc in enumerate(src.descriptions or (), start=1):
        name = canonical_band(desc, ("R", "G", "B"), sensor) if desc else None
        if name and name not in by_name:
            by_name[name] = i
    if len(by_name) == 3:
        return [(by_name[b], nodata[by_name[b] - 1]) for b in ("R", "G", "B")]
    return [(1, nodata[0])] * 3


def scene_rgb(src, shape: tuple[int, int], plan: Any = None, stretch: tuple[float, float] = (2, 98)) -> np.ndarray:
    """A decimated (rows, cols, 3) display image of an open raster, 0..1, NaN where it has no data.

    Each band is stretched between its own percentiles of the valid pixels (the preview's
    values are only for the eye, so stored integers and reflectances look alike).
    """
    bands = _rgb_bands(src, plan)
    idx = [i for i, _ in bands]
    raw = src.read(idx, out_shape=(3, *shape), out_dtype="float32")  # nearest: reads only the sampled pixels
    out = np.empty((*shape, 3), np.float32)
    for k, (_, nd) in enumerate(bands):
        v = raw[k]
        if nd is not None and np.isfinite(nd):
            v[v == np.float32(nd)] = np.nan
        ok = np.isfinite(v)
        lo, hi = np.percentile(v[ok], stretch) if ok.any() else (0.0, 1.0)
        out[..., k] = np.clip((v - lo) / max(hi - lo, 1e-6), 0, 1)
    return out


def _bytes(img: np.ndarray) -> np.ndarray:
    """0..1 floats as uint8 RGB: matplotlib draws those with a quarter of the memory."""
    return np.rint(np.clip(np.nan_to_num(img), 0, 1) * 255).astype(np.uint8)


def map_preview(map_path: str | Path, src, plan: Any = None, threshold: float = 0.5,
                max_side: int = MAX_SIDE) -> tuple[np.ndarray, float]:
    """The decimated scene (natural colour) with its map's cropland laid over it: ((rows, cols, 3) 0..1, share).

    Cropland (the class band, else DN >= threshold * 200) is blended towards yellow, nodata
    is grey; ``share`` is the cropland fraction of the preview's valid pixels.
    """
    import rasterio

    shape = preview_shape(src.height, src.width, max_side)
    rgb = scene_rgb(src, shape, plan)
    with rasterio.open(map_path) as m:
        dn = m.read(1, out_shape=shape)
        cls = m.read(2, out_shape=shape) if m.count >= 2 else None
    nodata = dn == NODATA
    crop = (cls == 1) if cls is not None else (dn >= threshold * PROB_SCALE)
    crop &= ~nodata
    img = np.where(np.isfinite(rgb), rgb, 0.0).astype(np.float32)
    img[nodata | ~np.isfinite(rgb).all(axis=2)] = NODATA_COLOUR
    img[crop] = 0.45 * img[crop] + 0.55 * np.asarray(CROPLAND_COLOUR, np.float32)
    valid = int((~nodata).sum())
    return img, (float(crop.sum()) / valid if valid else 0.0)


def write_map_quicklook(map_path: str | Path, src, plan: Any = None, threshold: float = 0.5,
                        path: str | Path | None = None, max_side: int = MAX_SIDE) -> Path:
    """``{stem}_cropland.png``: :func:`map_preview` with a title and a legend, written atomically.

    ``src`` is the open scene, ``map_path`` its finished map (cropseg.maps encoding: band 1
    DN = 200 p, band 2 the class when present, 255 nodata).
    """
    from matplotlib.patches import Patch

    from cropseg.plots import plt, save_figure

    map_path = Path(map_path)
    img, share = map_preview(map_path, src, plan, threshold, max_side)
    h, w = img.shape[:2]
    fig, ax = plt.subplots(figsize=(max(5.0, w / 100), max(4.0, h / 100) + 0.6))
    ax.imshow(_bytes(img), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{map_path.name}\ncropland {share:.1%} of valid pixels", fontsize=9)
    ax.legend(handles=[Patch(color=CROPLAND_COLOUR, label=f"cropland (p >= {threshold:g})"),
                       Patch(facecolor="white", edgecolor="0.3", label="other (scene colours)"),
                       Patch(color=NODATA_COLOUR, label="no data")],
              loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=7, frameon=False)
    return save_figure(fig, path or quicklook_path(map_path), dpi=100)


def chip_quicklook(path: str | Path, src, windows: Sequence[tuple[int, int, int, int, str, int | None]],
                   title: str, plan: Any = None, max_side: int = MAX_SIDE) -> Path:
    """Where chips were cut from one raster: its decimated RGB with a box per window.

    ``windows``: (row, col, height, width, status, class c); written/existing chips are
    outlined in the colour of their class c (0..10), dropped windows dashed red.
    """
    from matplotlib import colormaps
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from cropseg.plots import plt, save_figure

    shape = preview_shape(src.height, src.width, max_side)
    f = shape[0] / src.height
    rgb = scene_rgb(src, shape, plan)
    img = np.where(np.isfinite(rgb), rgb, NODATA_COLOUR[0])
    h, w = shape
    fig, ax = plt.subplots(figsize=(max(5.0, w / 100) + 1.4, max(4.0, h / 100) + 0.5))
    ax.imshow(_bytes(img), interpolation="nearest")
    cmap = colormaps["viridis"]
    classes: set[int] = set()
    dropped = False
    for row, col, hh, ww, status, c in windows:
        if status in ("written", "existing"):
            classes.add(int(c or 0))
            ax.add_patch(Rectangle((col * f - 0.5, row * f - 0.5), ww * f, hh * f, fill=False, lw=1.0,
                                   edgecolor=cmap((c or 0) / 10)))
        elif status == "dropped":
            dropped = True
            ax.add_patch(Rectangle((col * f - 0.5, row * f - 0.5), ww * f, hh * f, fill=False, lw=0.8,
                                   edgecolor="red", linestyle="--"))
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    handles = [Line2D([], [], color=cmap(c / 10), lw=2, label=f"chip, class c={c}") for c in sorted(classes)]
    if dropped:
        handles.append(Line2D([], [], color="red", lw=1, linestyle="--", label="dropped (nodata)"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return save_figure(fig, path, dpi=100)
