"""``cropseg publish``: upload yearly cropland maps to Cloud Storage and ingest them into Earth Engine.

    cropseg publish 'out/2015_*_cropland.tif' bucket=gs://BUCKET/maps \\
        asset=projects/PROJECT/assets/cropland/{year} [collection=...] [mode=ingest|cog] [dry_run=true]
    cropseg publish status [poll=false] [all=true]

1. Maps named ``{year}_{grid}_cropland.tif`` are grouped by year; each year's maps must
   share CRS, band count, data types and encoding tags (threshold, probability scale).
2. Each file is uploaded to ``bucket`` (google-cloud-storage); objects already there with
   the same size and CRC32C are skipped.
3. ``mode=ingest``: one Earth Engine image per year from an ingestion manifest (one tileset
   of every file, band names, missing data, pyramiding policy per band — MEAN for the
   probability, MODE for the class — and properties year, model, cropseg version, and from
   the maps' tags the threshold and the probability encoding, ``probability = DN / 200``),
   started as an ingestion task and tracked in the task manifest shared with ``cropseg gee``. ``mode=cog``: one Cloud-GeoTIFF-backed asset per file.
   With ``collection``, images go into that ImageCollection (created if missing).

``dry_run=true`` needs no credentials: it writes the ingestion manifests (or asset requests)
and ``uploads.json`` under ``dry_run_dir``. Every key: conf/publish.yaml (``--help``).
"""

from __future__ import annotations

import base64
import math
import json
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cropseg import __version__
from cropseg.command import Command, Group
from cropseg.errors import UserError, report_user_errors
from cropseg.io import ensure_output_dir, write_text_atomic
from cropseg.inputs import expand_inputs
from cropseg.maps import MAP_GLOB, MAP_NAME

#: Map tags that say how to read the pixels: every map of a year must agree, Earth Engine gets them.
ENCODING_TAGS = ("threshold", "probability_scale", "probability_encoding")
ASSET_ID = re.compile(r"^(projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/assets|users/[A-Za-z0-9_-]+)(/[A-Za-z0-9_-]+)+$")
PYRAMIDING = {"MEAN", "MODE", "MIN", "MAX", "SAMPLE", "MEDIAN"}


@dataclass
class MapFile:
    path: Path
    year: int
    grid: str
    crs: str
    count: int
    dtypes: tuple[str, ...]
    nodata: tuple[float | None, ...]
    size: int
    crc32c: str = ""
    uri: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Item:
    """One publishing task (shares the gee task manager)."""
    kind: str
    year: int
    grid: Any
    name: str
    params: dict[str, Any]
    request: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.year}:{self.grid}"


# -- inputs ---------------------------------------------------------------------------------

def parse_bucket(bucket: str | None) -> tuple[str, str]:
    if not bucket:
        raise UserError("bucket is required (bucket=gs://BUCKET[/prefix]: where the maps are uploaded)")
    bucket = str(bucket)
    if not bucket.startswith("gs://") or len(bucket) <= 5:
        raise UserError(f"bucket={bucket!r} must be a Cloud Storage URL gs://BUCKET[/prefix]")
    name, _, prefix = bucket[5:].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", name):
        raise UserError(f"bucket={bucket!r}: {name!r} is not a valid bucket name")
    return name, prefix.strip("/")


def check_asset_id(asset: str, key: str = "asset") -> str:
    if not ASSET_ID.fullmatch(asset or ""):
        raise UserError(f"{key}={asset!r} is not a valid Earth Engine asset id "
                        "(projects/PROJECT/assets/FOLDER/NAME; letters, digits, _ and -)")
    return asset


def crc32c_b64(path: Path) -> str:
    """CRC32C of a file, base64 big-endian, as Cloud Storage reports it."""
    import google_crc32c

    crc = google_crc32c.Checksum()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            crc.update(chunk)
    return base64.b64encode(crc.digest()).decode()


def read_maps(inputs) -> dict[int, list[MapFile]]:
    """The maps named by ``inputs`` (files, globs, folders, list files), grouped by year, each year's layout checked."""
    import rasterio

    paths = expand_inputs(inputs, (MAP_GLOB,), key="maps", what="maps")
    years: dict[int, list[MapFile]] = defaultdict(list)
    for p in map(Path, paths):
        m = MAP_NAME.match(p.name)
        if not m:
            raise UserError(f"{p}: not named {{year}}_{{grid}}_cropland.tif")
        try:
            with rasterio.open(p) as src:
                crs = src.crs.to_string() if src.crs else ""
                mf = MapFile(p, int(m["year"]), m["grid"], crs, src.count, tuple(src.dtypes),
                             tuple(src.nodatavals), p.stat().st_size, tags=dict(src.tags()))
        except rasterio.errors.RasterioIOError as err:
            raise UserError(f"{p}: not a readable GeoTIFF ({str(err).splitlines()[0]})") from None
        if not mf.crs:
            raise UserError(f"{p}: has no CRS")
        years[mf.year].append(mf)
    for year, maps in years.items():
        first = maps[0]
        for mf in maps[1:]:
            for what, a, b in (("CRS", first.crs, mf.crs), ("band count", first.count, mf.count),
                               ("band types", first.dtypes, mf.dtypes),
                               *((f"tag {t}", first.tags.get(t), mf.tags.get(t)) for t in ENCODING_TAGS)):
                if a != b:
                    raise UserError(f"maps of {year} differ in {what}: {first.path.name} has {a}, {mf.path.name} has {b}")
    return dict(sorted(years.items()))


# -- manifests ------------------------------------------------------------------------------

def _bands(cfg: dict[str, Any], sample: MapFile) -> list[dict[str, Any]]:
    bands = cfg.get("bands") or []
    if len(bands) != sample.count:
        raise UserError(f"bands: {len(bands)} configured but {sample.path.name} has {sample.count} band(s)")
    out = []
    for i, b in enumerate(bands):
        policy = str(b.get("pyramiding", "MEAN")).upper()
        if policy not in PYRAMIDING:
            raise UserError(f"bands[{i}].pyramiding={policy!r} is not known; choose among {', '.join(sorted(PYRAMIDING))}")
        entry = {"id": str(b["name"]), "tilesetId": "maps", "tilesetBandIndex": i, "pyramidingPolicy": policy}
        nodata = cfg.get("nodata") if cfg.get("nodata") is not None else b.get("nodata", sample.nodata[i])
        if nodata is not None:
            entry["missingData"] = {"values": [float(nodata)]}
        out.append(entry)
    return out


def properties(cfg: dict[str, Any], year: int, maps: list[MapFile]) -> dict[str, Any]:
    """Image properties: year, version, model, and how to read the pixels — the threshold the class
    band was made with and the probability encoding, both from the maps' own tags."""
    props: dict[str, Any] = {"year": int(year), "cropseg_version": __version__}
    if cfg.get("model_name") is not None:
        props["model"] = str(cfg["model_name"])
    tags = maps[0].tags  # the same in every map of the year (read_maps checks)
    threshold = tags.get("threshold")
    if threshold is not None:
        if cfg.get("threshold") is not None and not math.isclose(float(cfg["threshold"]), float(threshold)):
            raise UserError(f"threshold={cfg['threshold']} differs from the threshold {float(threshold):g} the maps "
                            f"of {year} were made with (tag 'threshold' of {maps[0].path.name}); leave threshold=null")
        props["threshold"] = float(threshold)
    elif cfg.get("threshold") is not None:
        props["threshold"] = float(cfg["threshold"])
    if tags.get("probability_scale"):
        props["probability_scale"] = float(tags["probability_scale"])
    if tags.get("probability_encoding"):
        props["probability_encoding"] = str(tags["probability_encoding"])
    props.update(cfg.get("properties") or {})
    return props


def _time(year: int) -> tuple[str, str]:
    return f"{year}-01-01T00:00:00Z", f"{year + 1}-01-01T00:00:00Z"


def asset_for_year(cfg: dict[str, Any], year: int) -> str:
    collection = cfg.get("collection")
    if collection:
        check_asset_id(collection, "collection")
    template = cfg.get("asset") or (f"{collection}/{{year}}" if collection else None)
    if not template:
        raise UserError("asset is required (e.g. asset=projects/PROJECT/assets/cropland/{year}) or give collection=...")
    asset = str(template).format(year=year)
    check_asset_id(asset)
    if collection and not asset.startswith(collection.rstrip("/") + "/"):
        raise UserError(f"asset={asset!r} must lie inside collection={collection!r} (e.g. {collection}/{year})")
    return asset


def ingestion_manifest(cfg: dict[str, Any], year: int, maps: list[MapFile]) -> dict[str, Any]:
    """An Earth Engine ImageManifest: one tileset of every file of the year."""
    start, end = _time(year)
    return {
        "name": asset_for_year(cfg, year),
        "tilesets": [{"id": "maps", "sources": [{"uris": [m.uri]} for m in maps]}],
        "bands": _bands(cfg, maps[0]),
        "startTime": start,
        "endTime": end,
        "properties": properties(cfg, year, maps),
    }


def cog_request(cfg: dict[str, Any], mf: MapFile, year_maps: list[MapFile]) -> dict[str, Any]:
    """A Cloud-GeoTIFF-backed image asset for one file."""
    collection = cfg.get("collection")
    template = str(cfg.get("cog_asset") or "{asset}_{grid}")
    if "{grid}" not in template:
        raise UserError(f"cog_asset={template!r} must contain {{grid}} (one asset per file)")
    if "{collection}" in template and not collection:
        template = "{asset}_{grid}"
    asset = template.format(asset=(cfg.get("asset") or "").format(year=mf.year), collection=collection or "",
                            year=mf.year, grid=mf.grid)
    check_asset_id(asset, "cog_asset")
    start, end = _time(mf.year)
    props = properties(cfg, mf.year, year_maps)
    props["grid"] = mf.grid
    return {"name": asset, "type": "IMAGE", "gcsLocation": {"uris": [mf.uri]}, "startTime": start, "endTime": end,
            "properties": props}


def plan(cfg: dict[str, Any]) -> tuple[list[MapFile], list[Item]]:
    bucket, prefix = parse_bucket(cfg.get("bucket"))
    mode = str(cfg.get("mode", "ingest"))
    if mode not in {"ingest", "cog"}:
        raise UserError(f"mode={mode!r} is not known; choose ingest or cog")
    years = read_maps(cfg["maps"])
    files, items = [], []
    for year, maps in years.items():
        for mf in maps:
            mf.uri = f"gs://{bucket}/{prefix + '/' if prefix else ''}{mf.path.name}"
            files.append(mf)
        _bands(cfg, maps[0])
        if mode == "ingest":
            man = ingestion_manifest(cfg, year, maps)
            items.append(Item("ingest", year, "all", man["name"], {"asset": man["name"], "files": len(maps)}, man))
        else:
            for mf in maps:
                req = cog_request(cfg, mf, maps)
                items.append(Item("cog", year, mf.grid, req["name"], {"asset": req["name"], "uri": mf.uri}, req))
    return files, items


# -- Cloud Storage --------------------------------------------------------------------------

def upload(files: list[MapFile], bucket: str, prefix: str, client=None, log: Callable[[str], None] = print) -> dict[str, int]:
    """Upload each file unless an object with the same size and CRC32C is already there."""
    if client is None:
        from google.cloud import storage

        client = storage.Client()
    bkt = client.bucket(bucket)
    counts = {"uploaded": 0, "skipped": 0}
    for mf in files:
        name = f"{prefix}/{mf.path.name}" if prefix else mf.path.name
        mf.crc32c = mf.crc32c or crc32c_b64(mf.path)
        blob = bkt.get_blob(name)
        if blob is not None and blob.size == mf.size and blob.crc32c == mf.crc32c:
            counts["skipped"] += 1
            continue
        blob = bkt.blob(name)
        blob.upload_from_filename(str(mf.path), checksum="crc32c")
        counts["uploaded"] += 1
        log(f"uploaded {mf.path} -> gs://{bucket}/{name}")
    return counts


# -- Earth Engine ---------------------------------------------------------------------------

class PublishBackend:
    """Starts ingestions (tracked tasks) and creates COG-backed assets (immediate)."""

    def __init__(self, overwrite: bool = False, collection: str | None = None):
        self.overwrite, self.collection = overwrite, collection
        self._collection_ready = False

    def _ensure_collection(self) -> None:
        import ee

        if self.collection and not self._collection_ready:
            if ee.data.getInfo(self.collection) is None:
                ee.data.createAsset({"type": "IMAGE_COLLECTION"}, self.collection)
            self._collection_ready = True

    def start(self, item: Item) -> str:
        import ee

        self._ensure_collection()
        if item.kind == "ingest":
            result = ee.data.startIngestion(ee.data.newTaskId()[0], item.request, self.overwrite)
            return str(result["id"])
        if self.overwrite and ee.data.getInfo(item.request["name"]) is not None:
            ee.data.deleteAsset(item.request["name"])
        ee.data.createAsset(item.request)
        return f"sync:{item.request['name']}"

    def states(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        from cropseg.gee.tasks import EarthEngineBackend

        out = {t: {"state": "COMPLETED"} for t in task_ids if t.startswith("sync:")}
        real = [t for t in task_ids if not t.startswith("sync:")]
        if real:
            out.update(EarthEngineBackend().states(real))
        return out


def write_dry_run(cfg: dict[str, Any], files: list[MapFile], items: list[Item]) -> Path:
    out = ensure_output_dir(cfg["dry_run_dir"], "dry_run_dir")
    uploads = [{"path": str(f.path), "uri": f.uri, "size": f.size, "crc32c": crc32c_b64(f.path)} for f in files]
    write_text_atomic(out / "uploads.json", json.dumps({"dry_run": True, "uploads": uploads}, indent=1) + "\n")
    for it in items:
        stem = it.name.replace("/", "__")
        name = f"{stem}.manifest.json" if it.kind == "ingest" else f"{stem}.asset.json"
        write_text_atomic(out / name, json.dumps(it.request, indent=1) + "\n")
    return out


def execute(cfg: dict[str, Any], storage_client=None, backend=None, sleep=time.sleep) -> int:
    from cropseg.gee import engine
    from cropseg.gee.tasks import Manifest, Policy, TaskManager

    policy = Policy.from_config(cfg["tasks"])
    if not cfg["maps"]:
        raise UserError("maps are required (cropseg publish MAPS... bucket=gs://...)")
    files, items = plan(cfg)
    if cfg["dry_run"]:
        out = write_dry_run(cfg, files, items)
        kind = "ingestion manifest(s)" if cfg.get("mode", "ingest") == "ingest" else "asset request(s)"
        print(f"dry run: {len(files)} upload(s) in {out}/uploads.json, {len(items)} {kind} in {out}/; nothing touched")
        return 0
    manifest = Manifest(cfg["tasks"]["manifest"])
    manifest.check_writable()
    if backend is None:
        engine.init_real(cfg.get("project"))
        backend = PublishBackend(bool(cfg.get("overwrite")), cfg.get("collection"))
    bucket, prefix = parse_bucket(cfg["bucket"])
    try:
        counts = upload(files, bucket, prefix, storage_client)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - credentials, permissions, network: one line
        if type(err).__name__ in {"DefaultCredentialsError", "RefreshError", "Forbidden", "Unauthorized", "NotFound"}:
            raise UserError(f"Cloud Storage upload to gs://{bucket} failed ({' '.join(str(err).split())[:200]}); "
                            "run `gcloud auth application-default login` and check the bucket exists") from None
        raise
    print(f"uploads: {counts['uploaded']} uploaded, {counts['skipped']} already there")
    manager = TaskManager(manifest, backend, policy)
    print(manager.run(items, cfg["follow"], float(cfg["tasks"].get("poll_s", 60)), sleep=sleep))
    return 0


def status(cfg: dict[str, Any], backend=None) -> int:
    from cropseg.gee.tasks import Policy, show_status

    return show_status(cfg["tasks"]["manifest"], cfg.get("project"), Policy.from_config(cfg["tasks"]),
                       poll=cfg["poll"], show_all=cfg["all"], backend=backend)


def commands(storage_client=None, backend=None, sleep=time.sleep) -> Group:
    """``cropseg publish [MAPS...]`` and ``cropseg publish status`` (clients replaceable in tests)."""
    return Group("cropseg publish", {
        "upload": Command("cropseg publish", "publish", lambda c: execute(c, storage_client, backend, sleep),
                          "upload maps to Cloud Storage and ingest them into Earth Engine", ("maps...",)),
        "status": Command("cropseg publish status", "publish", lambda c: status(c, backend),
                          "show the publishing tasks (and ask Earth Engine about those in flight)"),
    }, "Upload cropland maps to Cloud Storage and ingest them into Earth Engine.", default="upload")


def run(argv: list[str], storage_client=None, backend=None, sleep=time.sleep) -> int:
    return commands(storage_client, backend, sleep)(argv)


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    return run(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
