"""encode-batch on real Ray (a local instance of 2 CPUs), on crops of real OSCD cities: pairs
encode, a corrupt pair becomes an error record, a killed driver or worker loses no finished
pair, and the catalogue is STAC that pystac reads, with COG rasters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import crop_oscd_city, oscd_root, run_cli

pytestmark = pytest.mark.slow

CITIES = {"paris": (120, 120), "pisa": (240, 240), "nantes": (120, 240)}
# long enough for a pair to be caught mid-training
KILL_EPOCHS = 60
TINY = ["--ngf", "2", "--depth", "3", "--patch-size", "32"]


@pytest.fixture(scope="module")
def pair_list(tmp_path_factory) -> Path:
    """A CSV of three real 96 px crops, and a fourth pair whose target is not a raster."""
    root = tmp_path_factory.mktemp("batch")
    rows = ["id,reference,target,target_datetime,reference_datetime"]
    for city, (row, col) in CITIES.items():
        crop_oscd_city(oscd_root() / city, root / city, row, col, 96)
        rows.append(f"{city},{city}/imgs_1,{city}/imgs_2,2017-10-01,2015-08-01")
    (root / "broken").mkdir()
    (root / "broken" / "target.tif").write_bytes(b"II*\x00" + bytes(200))
    rows.append("broken,paris/imgs_1,broken/target.tif,2017-10-01T10:30:00Z,")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root / "pairs.csv"


def _batch(pair_list: Path, out: Path, *extra: str, epochs: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "qmtgan",
        "encode-batch",
        str(pair_list),
        "-o",
        str(out),
        "--epochs",
        str(epochs),
        *TINY,
        *extra,
    ]


def test_a_batch_encodes_its_pairs_records_the_corrupt_one_and_catalogues_them(pair_list, tmp_path):
    import pystac
    from pystac.validation import validate_dict
    from rio_cogeo.cogeo import cog_validate

    out = tmp_path / "archive"
    proc = subprocess.run(
        _batch(pair_list, out, "--workers", "2"), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "3 encoded, 0 already finished, 1 failed" in proc.stdout
    error = json.loads((out / "pairs" / "broken" / "error.json").read_text())
    assert error["status"] == "error" and "broken" in error["error"] and "target.tif" in error["error"]
    assert not (out / "pairs" / "broken" / "done.json").exists()

    summary = json.loads((out / "batch.json").read_text())
    assert summary["finished"] == sorted(CITIES) and summary["workers"] == 2
    catalog = pystac.Catalog.from_file(str(out / "catalog.json"))
    items = {i.id: i for i in catalog.get_items()}
    assert sorted(items) == sorted(CITIES)
    # the core STAC schemas ship with pystac; extension schemas would need the network
    validate_dict(catalog.to_dict(), extensions=[])
    for city, item in items.items():
        validate_dict(item.to_dict(), extensions=[])
        record = json.loads((out / "pairs" / city / "done.json").read_text())
        assert item.properties["qmtgan:bpp"] == pytest.approx(
            8 * (out / "pairs" / city / f"{city}.qmtg").stat().st_size / (12 * 96 * 96)
        )
        assert item.properties["qmtgan:snr_db"] == record["snr_db"] > record["reference_snr_db"] - 3
        assert item.properties["proj:code"].startswith("EPSG:") and item.properties["proj:shape"] == [96, 96]
        west, south, east, north = item.bbox
        assert -180 <= west < east <= 180 and -90 <= south < north <= 90
        for key in ("payload", "preview", "report"):
            assert Path(item.assets[key].get_absolute_href()).is_file()
        for raster in (
            item.assets["preview"].get_absolute_href(),
            out / "pairs" / city / "pair" / "target.tif",
        ):
            valid, errors, _ = cog_validate(str(raster))
            assert valid, errors
        assert not (out / "pairs" / city / "model" / "checkpoints").exists()

    # a rerun skips what finished (by checksum) and tries the failed pair again
    again = subprocess.run(_batch(pair_list, out), capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "0 encoded, 3 already finished, 1 failed" in again.stdout
    # a finished pair whose payload was altered is encoded again
    payload = out / "pairs" / "pisa" / "pisa.qmtg"
    payload.write_bytes(payload.read_bytes()[:-1] + b"\x00")
    third = subprocess.run(_batch(pair_list, out), capture_output=True, text=True, timeout=600)
    assert "1 encoded, 2 already finished, 1 failed" in third.stdout, third.stderr[-2000:]


def _wait_for(predicate, what: str, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _good_pairs(pair_list: Path, dest: Path) -> Path:
    lines = [x for x in pair_list.read_text().splitlines() if not x.startswith("broken,")]
    dest.write_text(
        "\n".join(lines)
        .replace(",paris/", f",{pair_list.parent}/paris/")
        .replace(",pisa/", f",{pair_list.parent}/pisa/")
        .replace(",nantes/", f",{pair_list.parent}/nantes/")
        + "\n"
    )
    return dest


def _interrupted(out: Path) -> list[str]:
    """Pairs with a training checkpoint and no record: in training, or cut off in it."""
    return [
        p.parents[2].name
        for p in out.glob("pairs/*/model/checkpoints/latest")
        if not (p.parents[2] / "done.json").exists()
    ]


def test_a_killed_driver_loses_no_finished_pair_and_the_rerun_resumes(pair_list, tmp_path):
    good = _good_pairs(pair_list, tmp_path / "good.csv")
    out = tmp_path / "archive"
    driver = subprocess.Popen(
        _batch(good, out, epochs=KILL_EPOCHS), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(
            lambda: any(out.glob("pairs/*/done.json")) and _interrupted(out), "a finished pair and the next"
        )
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finished = {p.parent.name for p in out.glob("pairs/*/done.json")}
    interrupted = _interrupted(out)
    assert len(finished) >= 1 and interrupted
    first_epoch = (out / "pairs" / interrupted[0] / "model" / "train_log.csv").read_text().splitlines()[1]

    rerun = subprocess.run(_batch(good, out, epochs=KILL_EPOCHS), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{3 - len(finished)} encoded, {len(finished)} already finished, 0 failed" in rerun.stdout
    # the interrupted pair went on from its checkpoint: its first epoch is the one logged before
    log = (out / "pairs" / interrupted[0] / "model" / "train_log.csv").read_text().splitlines()
    assert log[1] == first_epoch and len(log) == KILL_EPOCHS + 1


def test_a_worker_killed_mid_pair_is_retried_and_the_batch_finishes(pair_list, tmp_path):
    good = _good_pairs(pair_list, tmp_path / "good.csv")
    out = tmp_path / "archive"
    driver = subprocess.Popen(
        _batch(good, out, epochs=KILL_EPOCHS), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(lambda: any(out.glob("pairs/*/model/checkpoints/latest")), "a training checkpoint")
    workers = subprocess.run(
        ["pgrep", "-f", "ray::_encode_task"], capture_output=True, text=True
    ).stdout.split()
    assert workers, "no Ray worker runs the pair"
    for pid in workers:
        os.kill(int(pid), signal.SIGKILL)
    stdout, stderr = driver.communicate(timeout=900)
    assert driver.returncode == 0, stderr[-3000:]
    assert "3 encoded, 0 already finished, 0 failed" in stdout
    assert len(list(out.glob("pairs/*/done.json"))) == 3


def test_a_pair_list_that_is_wrong_is_one_clear_error(tmp_path):
    bad = tmp_path / "pairs.csv"
    bad.write_text("id,reference,target\nx,a.tif,b.tif\n")
    proc = run_cli("encode-batch", bad, "-o", tmp_path / "out")
    assert proc.returncode == 1 and "target_datetime" in proc.stderr and not (tmp_path / "out").exists()
    bad.write_text("id,reference,target,target_datetime\n../x,a.tif,b.tif,2020-01-01\n")
    proc = run_cli("encode-batch", bad, "-o", tmp_path / "out")
    assert proc.returncode == 1 and "not a plain name" in proc.stderr
