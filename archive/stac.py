"""The batch's catalogue: a STAC catalog (pystac) with one item per encoded pair, beside its
assets (payload, preview COG, bundles, report), each written atomically."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from qmtgan import __version__
from qmtgan.archive.job import pair_folder
from qmtgan.runtime.atomic import write_text_atomic
from qmtgan.runtime.raster import COG_MEDIA_TYPE

CATALOG_ID = "qmtgan-archive"
PAYLOAD_MEDIA_TYPE = "application/vnd.qmtgan.qmtg"


def pair_item(out: Path, record: dict):
    """The STAC item of one finished pair's record."""
    import pystac
    from pystac.extensions.projection import ProjectionExtension

    fp = record["footprint"]
    settings = record["settings"]
    properties = {
        "qmtgan:version": record["qmtgan_version"],
        "qmtgan:bpp": record["bpp"],
        "qmtgan:snr_db": record["snr_db"],
        "qmtgan:bits": settings["bits"],
        "qmtgan:method": settings["method"],
        "qmtgan:epochs": settings["epochs"],
        "qmtgan:generator": record["generator"],
        "qmtgan:payload_bytes": record["payload_bytes"],
        "qmtgan:reference_datetime": record["reference_datetime"] or None,
        "qmtgan:inputs_sha256": record["inputs_sha256"],
    }
    item = pystac.Item(
        record["id"],
        fp["geometry"],
        fp["bbox"],
        datetime.fromisoformat(record["target_datetime"]),
        properties,
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code, proj.shape, proj.transform = fp["crs"], fp["shape"], fp["transform"]
    folder = pair_folder(out, record["id"])
    assets = [  # key, file, title, media type, roles
        ("payload", record["payload"], "compressed target (.qmtg)", PAYLOAD_MEDIA_TYPE, ["data"]),
        ("preview", "preview.tif", "decoded target, true colour", COG_MEDIA_TYPE, ["overview", "visual"]),
        ("report", "report.md", "encoding report", "text/markdown", ["metadata"]),
        ("record", "report.json", "encoding record", pystac.MediaType.JSON, ["metadata"]),
        *((f"bundle-{name}", f"bundles/{name}/manifest.json", f"{name} deployment bundle (manifest)",
           pystac.MediaType.JSON, ["metadata"]) for name in record["bundles"]),
    ]
    for key, file, title, media_type, roles in assets:
        item.add_asset(key, pystac.Asset(str(folder / file), title, media_type=media_type, roles=roles))
    item.set_self_href(str(folder / f"{record['id']}.json"))
    return item


def write_catalogue(out: Path, records: list[dict]) -> Path:
    """OUT/catalog.json over every finished pair's item (OUT/pairs/ID/ID.json); links and asset
    hrefs are relative, so the folder can move as a whole."""
    import pystac

    out = Path(out).resolve()
    catalog = pystac.Catalog(
        CATALOG_ID,
        f"Sentinel-2 targets compressed by qmtgan {__version__}: each "
        "item's payload decodes against its reference date",
        title="qmtgan archive",
        catalog_type=pystac.CatalogType.SELF_CONTAINED,
    )
    catalog.set_self_href(str(out / "catalog.json"))
    items = [pair_item(out, r) for r in sorted(records, key=lambda r: r["id"])]
    for item in items:
        catalog.add_item(item)
        item.make_asset_hrefs_relative()
    for item in items:
        write_text_atomic(
            Path(item.get_self_href()),
            json.dumps(item.to_dict(include_self_link=False, transform_hrefs=True), indent=1),
        )
    path = out / "catalog.json"
    write_text_atomic(
        path, json.dumps(catalog.to_dict(include_self_link=False, transform_hrefs=True), indent=1)
    )
    return path
