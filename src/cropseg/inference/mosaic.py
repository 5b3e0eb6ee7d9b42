"""Mosaic a year's maps: ``cropseg mosaic MAPS... out=mosaic_2015.vrt`` (or ``.tif`` for a COG).

A VRT is a small XML file that references the maps (no pixel copied); a ``.tif`` output
is a Cloud-Optimized GeoTIFF streamed by GDAL from that VRT. The maps must share CRS,
pixel size, band count and data type (as the maps of one prediction run do); where
they overlap, the later map in name order wins over nodata only.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

from cropseg.command import Command
from cropseg.errors import UserError
from cropseg.inputs import expand_inputs
from cropseg.io import atomic_path, ensure_output_file
from cropseg.maps import MAP_GLOB, scene_year

#: Largest misalignment (in pixels) of a map's grid taken as rounding noise of its transform.
GRID_TOLERANCE = 1e-3
GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
              "float32": "Float32", "float64": "Float64"}


def collect_maps(inputs: Sequence[str], year: int | None = None, pattern: str = MAP_GLOB) -> list[Path]:
    """The maps named by ``inputs`` (files, globs, folders, list files), only ``{year}_*`` ones when ``year`` is set."""
    if year is None:
        return expand_inputs(inputs, (pattern,), key="maps", what="maps")
    # In folders look for this year's maps only, so that a miss names the pattern tried.
    maps = [m for m in expand_inputs(inputs, (f"{year}_{pattern}",), key="maps", what=f"maps of {year}")
            if scene_year(m) == year]
    if not maps:
        raise UserError(f"maps={','.join(map(str, inputs))}: no map of year={year} (named {year}_{pattern})")
    return maps


def build_vrt(maps: Sequence[Path], out: str | Path) -> Path:
    """Write a VRT mosaic of ``maps`` at ``out`` (atomically)."""
    from cropseg.inference.raster import open_raster

    out = Path(out)
    infos = []
    for m in maps:
        with open_raster(m) as src:
            if src.crs is None:
                raise UserError(f"{m}: has no CRS")
            infos.append(dict(path=m, crs=src.crs, t=src.transform, w=src.width, h=src.height, count=src.count,
                              dtype=src.dtypes[0], nodata=src.nodata, block=src.block_shapes[0],
                              desc=src.descriptions, tags=src.tags(), scales=src.scales))
    ref = infos[0]
    for info in infos[1:]:
        if info["crs"] != ref["crs"]:
            raise UserError(f"{info['path']}: CRS {info['crs']} differs from {ref['path']}'s {ref['crs']}; "
                            "mosaic maps of one projection (reproject first)")
        if not (math.isclose(info["t"].a, ref["t"].a) and math.isclose(info["t"].e, ref["t"].e)):
            raise UserError(f"{info['path']}: pixel size differs from {ref['path']}'s")
        if info["count"] != ref["count"] or info["dtype"] != ref["dtype"]:
            raise UserError(f"{info['path']}: {info['count']} {info['dtype']} bands, {ref['path']} has "
                            f"{ref['count']} {ref['dtype']}")
    res_x, res_y = ref["t"].a, ref["t"].e  # res_y < 0 (north up)
    if ref["t"].b or ref["t"].d:
        raise UserError(f"{ref['path']}: rotated rasters cannot be mosaicked")
    left = min(i["t"].c for i in infos)
    top = max(i["t"].f for i in infos)
    right = max(i["t"].c + i["w"] * res_x for i in infos)
    bottom = min(i["t"].f + i["h"] * res_y for i in infos)
    offsets = {}
    for info in infos:
        # A map whose grid is shifted by a fraction of a pixel cannot be placed without resampling:
        # rounding would move it silently (up to half a pixel, 15 m at 30 m).
        fx, fy = (info["t"].c - left) / res_x, (info["t"].f - top) / res_y
        if abs(fx - round(fx)) > GRID_TOLERANCE or abs(fy - round(fy)) > GRID_TOLERANCE:
            raise UserError(f"{info['path']}: its pixel grid is offset from {ref['path']}'s by a fraction of a pixel "
                            f"({fx - round(fx):+.3f}, {fy - round(fy):+.3f} px); mosaic maps of one grid "
                            "(warp them onto one first, e.g. gdalwarp -tap)")
        offsets[info["path"]] = (int(round(fx)), int(round(fy)))
    width = int(round((right - left) / res_x))
    height = int(round((bottom - top) / res_y))
    gdt = GDAL_TYPES.get(ref["dtype"], "Float32")
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"  <SRS dataAxisToSRSAxisMapping=\"1,2\">{escape(ref['crs'].to_wkt())}</SRS>",
             f"  <GeoTransform>{left!r}, {res_x!r}, 0.0, {top!r}, 0.0, {res_y!r}</GeoTransform>",
             '  <Metadata>' + "".join(f'<MDI key="{escape(k)}">{escape(str(v))}</MDI>' for k, v in ref["tags"].items()
                                      if k not in ("source",)) + "</Metadata>"]
    for b in range(1, ref["count"] + 1):
        lines.append(f'  <VRTRasterBand dataType="{gdt}" band="{b}">')
        if ref["nodata"] is not None:
            lines.append(f"    <NoDataValue>{ref['nodata']}</NoDataValue>")
        if ref["desc"][b - 1]:
            lines.append(f"    <Description>{escape(ref['desc'][b - 1])}</Description>")
        if ref["scales"] and ref["scales"][b - 1] not in (None, 1.0):
            lines.append(f"    <Scale>{ref['scales'][b - 1]!r}</Scale>")
        for info in infos:
            x_off, y_off = offsets[info["path"]]
            rel = os.path.relpath(Path(info["path"]).resolve(), out.resolve().parent)
            bh, bw = info["block"]
            lines += [
                "    <ComplexSource>",
                f'      <SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>',
                f"      <SourceBand>{b}</SourceBand>",
                f'      <SourceProperties RasterXSize="{info["w"]}" RasterYSize="{info["h"]}" DataType="{gdt}" '
                f'BlockXSize="{bw}" BlockYSize="{bh}"/>',
                f'      <SrcRect xOff="0" yOff="0" xSize="{info["w"]}" ySize="{info["h"]}"/>',
                f'      <DstRect xOff="{x_off}" yOff="{y_off}" xSize="{info["w"]}" ySize="{info["h"]}"/>',
            ]
            if info["nodata"] is not None:
                lines.append(f"      <NODATA>{info['nodata']}</NODATA>")
            lines.append("    </ComplexSource>")
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    try:
        with atomic_path(out) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
    except OSError as err:
        raise UserError(f"{out}: cannot write ({err.strerror or err})") from None
    return out


def build_cog(maps: Sequence[Path], out: str | Path) -> Path:
    """A Cloud-Optimized GeoTIFF mosaic (streamed by GDAL through a temporary VRT)."""
    from rasterio.shutil import copy as rio_copy

    out = Path(out)
    vrt = out.with_name(f".{out.stem}.mosaic.vrt")
    build_vrt(maps, vrt)
    try:
        with atomic_path(out) as tmp:
            rio_copy(vrt, tmp, driver="COG", compress="LZW", predictor=2, overview_resampling="average",
                     blocksize=512, BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")
    finally:
        vrt.unlink(missing_ok=True)
    return out


def run(cfg: dict) -> int:
    if not cfg["maps"]:
        raise UserError("maps are required (cropseg mosaic MAPS... out=PATH)")
    out = Path(cfg["out"])
    if out.suffix.lower() not in (".vrt", ".tif", ".tiff"):
        raise UserError(f"out={out}: give a .vrt or a .tif path")
    ensure_output_file(out, "out")
    maps = collect_maps(cfg["maps"], cfg["year"], cfg["pattern"])
    if out.suffix.lower() == ".vrt":
        build_vrt(maps, out)
        kind = "VRT"
    else:
        build_cog(maps, out)
        kind = "COG"
    print(f"cropseg mosaic: {kind} of {len(maps)} map(s) -> {out}")
    return 0


main = Command("cropseg mosaic", "mosaic", run, "Build a VRT or COG mosaic of cropland maps.", ("maps...",)).main


if __name__ == "__main__":
    raise SystemExit(main())
