"""The cropland map product: file names and pixel encoding, shared by inference, evaluation and publish.

Scenes to predict are named ``{year}_{grid}.tif``; each map is ``{stem}_cropland.tif``
(so ``{year}_{grid}_cropland.tif``). Band 1 holds the cropland probability as uint8,
``DN = round(PROB_SCALE * p)``; band 2 (optional) the class 0/1; ``NODATA`` in both where
the input had no data. The scale is also written as the ``probability_scale`` tag, a
number, so readers need not assume it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

PROB_SCALE = 200  # uint8 DN per unit probability: p = DN / 200
#: The one nodata value of every uint8 raster and label cropseg writes or reads by convention
#: (maps, agreement and change rasters, packed-store labels, demo labels); the training label
#: ``cropseg.data.transforms.IGNORE`` is this value as a float.
NODATA = 255
#: Output name of a map, from its scene's stem.
OUTPUT_PATTERN = "{stem}_cropland.tif"
#: Maps inside a folder.
MAP_GLOB = "*_cropland.tif"
#: Scenes inside a folder (``cropseg.inputs`` patterns).
SCENE_GLOBS = (("*.tif", "*.tiff", "*.TIF", "*.TIFF"),)
#: ``{year}_{grid}_cropland.tif`` (grid ids may contain underscores).
MAP_NAME = re.compile(r"^(?P<year>\d{4})_(?P<grid>.+?)_cropland\.tiff?$", re.IGNORECASE)
#: A scene's year: the leading ``YYYY`` of ``{year}_{grid}.tif``.
SCENE_YEAR = re.compile(r"^(\d{4})(?:_|$)")


def map_name(year: int, grid: str) -> str:
    return OUTPUT_PATTERN.format(stem=f"{year}_{grid}")


def scene_year(path: str | Path) -> int | None:
    """The year a scene (or map) file name starts with, or None."""
    m = SCENE_YEAR.match(Path(path).stem)
    return int(m.group(1)) if m else None


def encoding_tags() -> dict[str, str]:
    """Tags that say how band 1 encodes probability (``probability_scale`` is a number)."""
    return {"probability_scale": str(PROB_SCALE),
            "probability_encoding": f"probability = DN / {PROB_SCALE}; {NODATA} = nodata"}


def encode(prob: np.ndarray, valid: np.ndarray, threshold: float | None) -> np.ndarray:
    """Float probabilities (rows, W) as the map's bands (1 or 2, rows, W) uint8: DN, then class."""
    dn = np.rint(np.clip(prob, 0.0, 1.0) * PROB_SCALE).astype(np.uint8)
    dn[~valid] = NODATA
    if threshold is None:
        return dn[None]
    cls = (prob >= threshold).astype(np.uint8)
    cls[~valid] = NODATA
    return np.stack([dn, cls])
