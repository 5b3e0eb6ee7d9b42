"""Georeferenced demo scenes: multi-band GeoTIFFs like the Earth Engine composites.

``write_demo_scene`` renders one landscape with :func:`cropseg.data.demo.render_scene`
and writes it as a float32 GeoTIFF (band descriptions B, G, R, NIR, SWIR1, NDVI, Dem,
NaN nodata, tiled LZW), named ``{year}_{grid}.tif`` by ``main``, plus optionally the
label raster. ``python -m cropseg.data.demo_scene out=data/demo_scenes`` writes a few.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from cropseg.bands import DEFAULT_BANDS, LABEL_BAND
from cropseg.command import Command
from cropseg.errors import UserError
from cropseg.io import atomic_path, ensure_output_dir
from cropseg.maps import NODATA

from .demo import render_scene


def write_demo_scene(path: str | Path, height: int = 300, width: int = 400, seed: int = 0, year: int = 2015,
                     crs: str = "EPSG:32622", origin: tuple[float, float] = (500000.0, 9000000.0), res: float = 30.0,
                     nodata: bool = True, bands: Sequence[str] = DEFAULT_BANDS, label_path: str | Path | None = None,
                     cropland_fraction: float | None = None) -> Path:
    """Write a demo scene GeoTIFF (float32, bands described by name, NaN nodata); returns ``path``.

    ``bands`` picks and orders the bands written (drop ``NDVI``/``Dem`` to mimic a raw
    Landsat composite). ``origin`` is the upper-left corner in ``crs`` units.
    """
    import rasterio
    from rasterio.transform import from_origin

    unknown = [b for b in bands if b not in DEFAULT_BANDS]
    if unknown:
        raise UserError(f"demo scene: unknown band(s) {unknown}; choose from {list(DEFAULT_BANDS)}")
    rng = np.random.default_rng([seed, year])
    data, label = render_scene(height, width, rng, cropland_fraction, nodata=nodata)
    transform = from_origin(origin[0], origin[1], res, res)
    profile = dict(driver="GTiff", width=width, height=height, count=len(bands), dtype="float32", crs=crs,
                   transform=transform, nodata=float("nan"), tiled=True, blockxsize=256, blockysize=256,
                   compress="lzw")
    if width < 256 or height < 256:
        profile.update(tiled=False, blockxsize=None, blockysize=None)
        profile = {k: v for k, v in profile.items() if v is not None}
    path = Path(path)
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            for i, band in enumerate(bands, start=1):
                dst.write(data[..., DEFAULT_BANDS.index(band)], i)
                dst.set_band_description(i, band)
            dst.update_tags(source="cropseg-demo", year=str(year), seed=str(seed))
    if label_path is not None:
        lp = dict(profile, count=1, dtype="uint8", nodata=NODATA)
        lab = label.astype(np.uint8)
        lab[~np.isfinite(data).all(-1)] = NODATA
        with atomic_path(label_path) as tmp:
            with rasterio.open(tmp, "w", **lp) as dst:
                dst.write(lab, 1)
                dst.set_band_description(1, LABEL_BAND)
    return path


def run(a: dict) -> int:
    if a["height"] < 1 or a["width"] < 1:
        raise UserError("height and width must be >= 1")
    bands = list(a["bands"] or DEFAULT_BANDS)
    t0 = time.time()
    out = ensure_output_dir(a["out"], "out")
    written = []
    for k, grid in enumerate(a["grids"]):
        for year in a["years"]:
            path = out / f"{year}_{grid}.tif"
            label = out / f"{year}_{grid}_label.tif" if a["labels"] else None
            write_demo_scene(path, a["height"], a["width"], a["seed"] + int(grid), int(year), a["crs"],
                             (500000.0 + k * a["width"] * 30.0, 9000000.0), 30.0, True, bands, label)
            written.append(path)
    print(f"demo scenes: {len(written)} of {a['height']}x{a['width']} ({', '.join(bands)}) in {out} "
          f"in {time.time() - t0:.1f}s")
    return 0


main = Command("python -m cropseg.data.demo_scene", "demo_scene", run,
               "Write georeferenced demo scenes {year}_{grid}.tif (+ labels).").main


if __name__ == "__main__":
    raise SystemExit(main())
