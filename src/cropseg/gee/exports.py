"""Export tasks: one per grid cell (and year), to Google Drive or Cloud Storage.

``plan_samples`` and ``plan_composites`` return :class:`Planned` items: what the task is
(kind, year, grid cell, file name, destination, parameters) and how to build its
``ee.batch.Task`` — built only when it is to be started or written by a dry run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from cropseg.errors import UserError
from cropseg.gee import grid as gridmod
from cropseg.gee.composites import check_bands, composite, sensors_for_year
from cropseg.gee.samples import check_kernel, sample_collection, selectors

_DESCRIPTION_OK = re.compile(r"[^A-Za-z0-9_.,:;\- ]")


@dataclass
class Planned:
    kind: str  # "samples" or "composite"
    year: int
    grid: int
    name: str
    params: dict[str, Any]
    build: Callable[[], Any] = field(repr=False)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.year}:{self.grid}"


def destination(section: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``{type: drive, folder}`` or ``{type: gcs, bucket, prefix}`` from a config section."""
    kind = str(section.get("destination", "drive")).lower()
    if kind == "drive":
        return {"type": "drive", "folder": section.get("folder") or None}
    if kind in {"gcs", "cloudstorage", "cloud_storage"}:
        bucket = section.get("bucket")
        if not bucket:
            raise UserError(f"{key}.bucket is required with {key}.destination=gcs (e.g. {key}.bucket=gs://my-bucket/samples)")
        bucket = str(bucket)
        if bucket.startswith("gs://"):
            bucket = bucket[5:]
        name, _, extra = bucket.partition("/")
        prefix = "/".join(p.strip("/") for p in (extra, section.get("prefix") or "") if p and p.strip("/"))
        return {"type": "gcs", "bucket": name, "prefix": prefix}
    raise UserError(f"{key}.destination={kind!r} is not known; choose drive or gcs")


def _file_prefix(dest: Mapping[str, Any], name: str) -> str:
    return f"{dest['prefix']}/{name}" if dest.get("prefix") else name


def output_uri(dest: Mapping[str, Any], name: str, suffix: str) -> str:
    if dest["type"] == "gcs":
        return f"gs://{dest['bucket']}/{_file_prefix(dest, name)}{suffix}"
    return f"drive://{dest.get('folder') or ''}/{name}{suffix}"


def _description(name: str) -> str:
    return _DESCRIPTION_OK.sub("_", name)[:100]


def _name(template: str, key: str, **values: Any) -> str:
    try:
        return str(template).format(**values)
    except (KeyError, IndexError) as err:
        raise UserError(f"{key}={template!r}: unknown field {err}; use {{year}} and {{grid}}") from None


def plan_samples(cfg: Mapping[str, Any], dry_run: bool) -> list[Planned]:
    import ee

    s = cfg["samples"]
    year = int(s.get("year", 2015))
    window = int(cfg["sensors"].get("window", 1))
    sensors = [x.name for x in sensors_for_year(year, cfg["sensors"]["rules"], window)]  # checks the year early
    check_kernel(s.get("kernel_radius", 96), s.get("patch_size"))
    sel = selectors(cfg)
    dest = destination(s, "samples")
    out = []
    for cell in gridmod.cells(cfg["grid"], dry_run):
        name = _name(s.get("name", "samples_{year}_{grid}"), "samples.name", year=year, grid=cell.id)
        params = {"selectors": sel, "kernel_radius": int(s.get("kernel_radius", 96)),
                  "patch": 2 * int(s.get("kernel_radius", 96)) + 1, "scale": float(s.get("scale", 30)),
                  "sensors": sensors, "window": window, "file_format": "TFRecord", "destination": dest,
                  "output": output_uri(dest, name, ".tfrecord.gz"), "bounds": cell.bounds}

        def build(cell=cell, name=name):
            col = sample_collection(cell, year, cfg)
            common = {"collection": col, "description": _description(name), "fileNamePrefix": _file_prefix(dest, name),
                      "fileFormat": "TFRecord", "selectors": sel}
            if dest["type"] == "gcs":
                return ee.batch.Export.table.toCloudStorage(bucket=dest["bucket"], **common)
            common["fileNamePrefix"] = name
            return ee.batch.Export.table.toDrive(folder=dest["folder"], **common)

        out.append(Planned("samples", year, cell.id, name, params, build))
    return out


def plan_composites(cfg: Mapping[str, Any], dry_run: bool) -> list[Planned]:
    import ee

    c = cfg["composites"]
    years = c.get("years")
    years = [int(y) for y in (years if isinstance(years, (list, tuple)) else [years])] if years is not None else []
    if not years:
        raise UserError("composites.years is required (e.g. composites.years=[2015,2016])")
    window = int(cfg["sensors"].get("window", 1))
    sensors = {y: [x.name for x in sensors_for_year(y, cfg["sensors"]["rules"], window)] for y in years}
    bands = check_bands(cfg["composite"].get("bands"))
    dest = destination(c, "composites")
    dims = c.get("file_dimensions")
    if dims is not None:
        dims = [int(d) for d in dims] if isinstance(dims, (list, tuple)) else int(dims)
    out = []
    cells = gridmod.cells(c.get("grid") or cfg["grid"], dry_run, "composites.grid" if c.get("grid") else "grid")
    grid_cfg = c.get("grid") or cfg["grid"]
    for year in years:
        for cell in cells:
            name = _name(c.get("name", "{year}_{grid}"), "composites.name", year=year, grid=cell.id)
            params = {"bands": bands, "sensors": sensors[year], "window": window, "crs": c.get("crs", "EPSG:4326"),
                      "scale": float(c.get("scale", 30)), "max_pixels": float(c.get("max_pixels", 1e13)),
                      "file_dimensions": dims, "cloud_optimized": bool(c.get("cloud_optimized", True)),
                      "file_format": "GeoTIFF", "destination": dest, "output": output_uri(dest, name, ".tif"),
                      "bounds": cell.bounds}

            def build(cell=cell, name=name, year=year, params=params):
                region = cell.geometry(grid_cfg)
                image = composite(year, cfg, region=region, bands=bands)
                kwargs = {"image": image, "description": _description(name), "region": region,
                          "scale": params["scale"], "crs": params["crs"], "maxPixels": params["max_pixels"],
                          "fileFormat": "GeoTIFF", "formatOptions": {"cloudOptimized": params["cloud_optimized"]}}
                if dims is not None:
                    kwargs["fileDimensions"] = dims
                if dest["type"] == "gcs":
                    return ee.batch.Export.image.toCloudStorage(bucket=dest["bucket"], fileNamePrefix=_file_prefix(dest, name), **kwargs)
                return ee.batch.Export.image.toDrive(folder=dest["folder"], fileNamePrefix=name, **kwargs)

            out.append(Planned("composite", year, cell.id, name, params, build))
    return out
