"""Initializing earthengine-api: for real (credentials, project) or offline (no network).

Offline mode reuses earthengine-api's own test harness (``ee/apitestcase.py``): the
algorithm list is read from ``ee/tests/algorithms.json`` shipped in the wheel instead of
being fetched, and ``ee.Initialize`` is given no credentials. Graphs built that way
serialize exactly as they would be sent to Earth Engine; nothing can be computed.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from cropseg.errors import UserError

AUTH_HINT = (
    "run `earthengine authenticate` (or `gcloud auth application-default login`) and give your "
    "Cloud project with project=YOUR_PROJECT or EE_PROJECT=YOUR_PROJECT; dry_run=true needs neither"
)

_offline_active = False


def _algorithms() -> dict[str, Any]:
    try:
        from ee.apitestcase import GetAlgorithms

        return GetAlgorithms()
    except ImportError:  # the harness needs googleapiclient; fall back to the JSON file itself
        import ee
        from ee import _cloud_api_utils

        path = Path(ee.__file__).parent / "tests" / "algorithms.json"
        return _cloud_api_utils.convert_algorithms(json.loads(path.read_text(encoding="utf-8")))


def init_offline(project: str | None = None) -> dict[str, Any]:
    """Initialize ``ee`` without credentials or network (as ``ApiTestCase.InitializeApi``).

    Returns the replaced ``ee`` attributes, for :func:`restore`.
    """
    global _offline_active
    import ee

    saved = {
        "getAlgorithms": ee.data.getAlgorithms,
        "_install_cloud_api_resource": ee.data._install_cloud_api_resource,  # noqa: SLF001
        "computeValue": ee.data.computeValue,
        "_FetchDataCatalogStac": ee.deprecation._FetchDataCatalogStac,  # noqa: SLF001
    }
    ee.Reset()
    ee.data._install_cloud_api_resource = lambda: None  # noqa: SLF001
    ee.data.getAlgorithms = _algorithms
    # Anything that would compute on the server is a bug in offline code: say so loudly.
    ee.data.computeValue = _no_compute
    ee.deprecation._FetchDataCatalogStac = lambda: {}  # noqa: SLF001
    ee.Initialize(None, "", project=project or "dry-run")
    _offline_active = True
    return saved


def _no_compute(*_args, **_kwargs):
    raise RuntimeError("offline Earth Engine session: a value was requested from the server (getInfo)")


def restore(saved: dict[str, Any]) -> None:
    global _offline_active
    import ee
    from ee import _state

    ee.data.getAlgorithms = saved["getAlgorithms"]
    ee.data._install_cloud_api_resource = saved["_install_cloud_api_resource"]  # noqa: SLF001
    ee.data.computeValue = saved["computeValue"]
    ee.deprecation._FetchDataCatalogStac = saved["_FetchDataCatalogStac"]  # noqa: SLF001
    ee.Reset()
    _state.reset_state()
    _offline_active = False


@contextlib.contextmanager
def offline(project: str | None = None) -> Iterator[None]:
    """An offline Earth Engine session for the duration of the block (tests, dry runs)."""
    saved = init_offline(project)
    try:
        yield
    finally:
        restore(saved)


def is_offline() -> bool:
    return _offline_active


def init_real(project: str | None) -> None:
    """Initialize with the user's credentials; any failure is one line saying how to authenticate."""
    import ee

    project = project or os.environ.get("EE_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not project:
        raise UserError(f"gee: no Cloud project given; {AUTH_HINT}")
    try:
        ee.Initialize(project=project)
    except Exception as err:  # noqa: BLE001 - every way of failing here means "not authenticated"
        text = " ".join(str(err).split()) or type(err).__name__
        if any(w in text.lower() for w in ("authoriz", "authenticat", "credential")):
            raise UserError(f"Earth Engine is not authenticated: {AUTH_HINT}") from None
        raise UserError(f"Earth Engine could not be initialized ({text[:160]}); {AUTH_HINT}") from None


def serialize(obj: Any) -> dict[str, Any]:
    """The Cloud API JSON of an ``ee`` object, without shared-subtree references (readable)."""
    from ee import serializer

    return serializer.encode(obj, is_compound=False, for_cloud_api=True)


def serialize_compact(obj: Any) -> dict[str, Any]:
    """The Cloud API JSON exactly as sent (shared subtrees factored out)."""
    from ee import serializer

    return serializer.encode(obj, for_cloud_api=True)
