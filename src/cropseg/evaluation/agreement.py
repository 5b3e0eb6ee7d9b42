"""Pixel-wise agreement of cropland maps with a reference product (GFSAD30, another year's map...).

The reference is brought onto each map's grid with a ``WarpedVRT`` (CRS, transform and
size of the map; nearest by default, ``mode`` when the reference is finer), pixels
valid in both are compared, and every count is an area (true pixel areas), so tiles
at different latitudes weigh what they cover. Codes of the agreement map:
0 both non-cropland, 1 both cropland, 2 map only (commission), 3 reference only
(omission), ``cropseg.maps.NODATA`` (255) no data in either.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from cropseg.errors import UserError
from cropseg.io import atomic_path, ensure_output_dir
from cropseg.maps import NODATA

from .geodesy import pixel_areas
from .maps import MapRaster, MapSpec, open_map, open_maps
from .metrics import METRICS, metrics_from_counts

CODES = {0: "both non-cropland", 1: "both cropland", 2: "map only (commission)", 3: "reference only (omission)"}
COLORS = {0: (225, 225, 225, 255), 1: (60, 140, 60, 255), 2: (230, 150, 30, 255), 3: (140, 60, 170, 255)}


@dataclass
class AgreementConfig:
    maps: Sequence[str]
    reference: str
    out: str = "evaluation/agreement"
    spec: MapSpec = field(default_factory=MapSpec)
    reference_spec: MapSpec = field(default_factory=MapSpec)
    resampling: str = "nearest"
    year: int | None = None
    write_maps: bool = True
    plots: bool = True


def compare(m: MapRaster, ref: MapRaster, resampling: Resampling, out_tif: Path | None, rows: int = 512
            ) -> tuple[np.ndarray, np.ndarray]:
    """Area (m²) and pixel count of each code 0..3 (index 4: map valid but no reference)."""
    areas = np.zeros(5)
    counts = np.zeros(5, np.int64)
    profile = dict(driver="GTiff", width=m.width, height=m.height, count=1, dtype="uint8", crs=m.crs,
                   transform=m.transform, nodata=NODATA, compress="lzw", tiled=True, blockxsize=256, blockysize=256)
    with contextlib.ExitStack() as stack:
        ds = stack.enter_context(rasterio.open(m.path))
        rsrc = stack.enter_context(rasterio.open(ref.path))
        vrt_args = dict(crs=m.crs, transform=m.transform, width=m.width, height=m.height, resampling=resampling)
        if ref.nodata is not None:
            vrt_args |= dict(src_nodata=ref.nodata, nodata=ref.nodata)
        vrt = stack.enter_context(WarpedVRT(rsrc, **vrt_args))
        writer = None
        if out_tif:
            tmp = stack.enter_context(atomic_path(out_tif))  # renamed after the writer closes
            writer = stack.enter_context(rasterio.open(tmp, "w", **profile))
            writer.write_colormap(1, COLORS)
            writer.update_tags(1, classes="; ".join(f"{k} {v}" for k, v in CODES.items()), reference=ref.path.name)
        for win, crop, valid, _ in m.blocks(ds, rows):
            rcrop, rvalid, _ = ref.interpret(vrt.read(ref.bands_to_read(), window=win))
            rvalid &= vrt.read_masks(1, window=win) > 0
            both = valid & rvalid
            code = np.full(crop.shape, NODATA, np.uint8)
            code[both] = np.where(crop & rcrop, 1, np.where(crop & ~rcrop, 2, np.where(~crop & rcrop, 3, 0)))[both]
            a = np.broadcast_to(pixel_areas(m.transform, m.crs, int(win.row_off), int(win.height), 0, m.width),
                                code.shape)
            code[valid & ~rvalid] = 4  # map valid, no reference: counted, then written as nodata
            keep = code != NODATA
            areas += np.bincount(code[keep], weights=a[keep], minlength=5)
            counts += np.bincount(code[keep], minlength=5)
            code[code == 4] = NODATA
            if writer is not None:
                writer.write(code, 1, window=win)
    return areas, counts


def _row(name: str, year, areas: np.ndarray, counts: np.ndarray) -> dict:
    # confusion with the reference as truth: tn=0, tp=1, fp=2 (map only), fn=3 (reference only)
    tn, tp, fp, fn = areas[:4] / 1e6
    met = metrics_from_counts(tn, fp, fn, tp)
    row = {"map": name, "year": year, "pixels_compared": int(counts[:4].sum()), "area_compared_km2": areas[:4].sum() / 1e6,
           "area_no_reference_km2": areas[4] / 1e6,
           "both_noncrop_km2": tn, "both_crop_km2": tp, "map_only_km2": fp, "reference_only_km2": fn,
           "map_cropland_km2": tp + fp, "reference_cropland_km2": tp + fn}
    row |= {("agreement" if k == "overall_accuracy" else k): float(met[k]) for k in METRICS}
    return row


def evaluate_agreement(cfg: AgreementConfig) -> dict:
    from .points import _write_csv

    try:
        resampling = Resampling[cfg.resampling]
    except KeyError:
        raise UserError(f"resampling={cfg.resampling!r}: choose one of nearest, mode, min, max, med") from None
    out = ensure_output_dir(cfg.out, "out")
    ref = open_map(cfg.reference, cfg.reference_spec)
    maps = open_maps(cfg.maps, cfg.spec, year=cfg.year)  # year=: that year's maps, as in area
    if cfg.year is None and ref.year is not None and any(m.year is not None for m in maps):
        same = [m for m in maps if m.year == ref.year]
        if not same:
            years = ", ".join(sorted({str(m.year) for m in maps}))
            raise UserError(f"mismatched years: reference {ref.path.name} is for {ref.year}, maps are for {years} "
                            "(pass year=YEAR to compare anyway)")
        maps = same
    rows, tifs = [], []
    total_a, total_c = np.zeros(5), np.zeros(5, np.int64)
    for m in maps:
        tif = out / f"agreement_{m.path.stem}.tif" if cfg.write_maps else None
        a, c = compare(m, ref, resampling, tif)
        if c[:4].sum() == 0:
            rows.append(_row(m.path.name, m.year, a, c) | {"note": "no overlap with the reference"})
            continue
        total_a += a
        total_c += c
        rows.append(_row(m.path.name, m.year, a, c))
        if tif:
            tifs.append(tif)
    if total_c[:4].sum() == 0:
        raise UserError(f"{ref.path}: the reference does not overlap any map (check its CRS and extent)")
    rows.append(_row("all", None, total_a, total_c))
    table = pd.DataFrame(rows)
    table["year"] = table["year"].astype("Int64")
    _write_csv(table, out / "agreement.csv")
    files = [str(out / "agreement.csv")] + [str(t) for t in tifs]
    if cfg.plots and tifs:
        from .plots import agreement_figure

        files.append(str(agreement_figure(tifs, rows[-1], out / "agreement.png", ref.path.name)))
    return {"table": table, "files": files, "reference": ref.describe(), "maps": [m.describe() for m in maps]}
