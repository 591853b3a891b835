"""Property-based fuzzing (hypothesis) of every parser that reads bytes from outside: the .qmtg
reader, the bundle archive and manifest loader, the board TOML loader and the C++ runner's .npy
reader (through the binary). The property is the same for each: any input either parses or is
refused with one QmtganError (a clear message), never another exception, a hang, or a write
outside the scratch folder.

`make test` runs a short seeded fraction (200 inputs per parser); `make fuzz` runs 100,000 per
parser (QMTGAN_FUZZ_EXAMPLES, helpers.FUZZ).
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from helpers import FUZZ
from qmtgan.runtime.errors import QmtganError


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


def _refused_or_parsed(fn, *args):
    """Run a parser: parsing or a QmtganError are the two allowed outcomes."""
    try:
        return fn(*args)
    except QmtganError as exc:
        assert str(exc), "an empty error message"
        return None


# --- .qmtg ---------------------------------------------------------------------------------

def _valid_payload() -> bytes:
    from qmtgan.runtime import payload as fmt

    rng = np.random.default_rng(0)
    header = {
        "tensors": [
            {
                "name": "w",
                "shape": [3, 3, 2, 4],
                "bits": 4,
                "method": "symmetric",
                "side": 4,
                "channel_axis": 3,
            },
            {"name": "b", "shape": [4], "bits": 32, "method": "float", "side": 0, "channel_axis": None},
        ],
        "shared_side": False,
    }
    return fmt.encode(
        fmt.Payload(
            header,
            [rng.integers(0, 16, (3, 3, 2, 4)).astype(np.uint32), None],
            [rng.random(4).astype(np.float32), None],
            [None, rng.random(4).astype(np.float32)],
        )
    )


VALID_QMTG = _valid_payload()


def _decode_and_dequantize(data: bytes):
    from qmtgan.runtime import payload as fmt

    payload = fmt.decode(data, "fuzzed.qmtg")
    payload.weights()
    return payload


@FUZZ
@given(st.binary(max_size=300) | st.builds(lambda cut, junk: VALID_QMTG[:cut] + junk,
                                           st.integers(0, len(VALID_QMTG)), st.binary(max_size=40)))
def test_qmtg_reader_on_arbitrary_and_truncated_bytes(data):
    _refused_or_parsed(_decode_and_dequantize, data)


@FUZZ
@example(data=None)
@given(st.data())
def test_qmtg_reader_on_well_formed_containers_with_hostile_content(data):
    """Checksums recomputed, so the parser behind them is reached: a fuzzed header (a valid one
    with one field replaced, or any JSON) and fuzzed section bytes."""
    from qmtgan.runtime import payload as fmt

    if data is None:  # JSON nested deeper than Python's recursion limit
        deep = fmt.pack_sections(
            fmt.VERSION, [(b"HEAD", fmt.pack_header(b"[" * 100_000))] + [(t, b"") for t in fmt.SECTIONS[1:]]
        )
        return _refused_or_parsed(_decode_and_dequantize, deep)
    valid = fmt.decode(VALID_QMTG)
    header = json.loads(json.dumps(valid.header))
    if data.draw(st.booleans()):
        tensor = header["tensors"][data.draw(st.integers(0, 1))]
        tensor[data.draw(st.sampled_from(sorted(tensor)))] = data.draw(JSON)
    else:
        header = data.draw(JSON)
    try:
        head = json.dumps(header).encode()
    except ValueError:  # a float NaN in a strict encoder; json.dumps allows it, keep the path honest
        head = b"{}"
    sections = [(b"HEAD", fmt.pack_header(head))] + [(tag, data.draw(st.binary(max_size=200)))
                                                     for tag in fmt.SECTIONS[1:]]
    _refused_or_parsed(_decode_and_dequantize, fmt.pack_sections(fmt.VERSION, sections))


@FUZZ
@given(st.sampled_from(["packed", "ppmd", "lzma", "zstd", "brotli", ""]), st.data())
def test_qmtg_reader_on_hostile_entropy_coded_sections(coder, data):
    """A valid header naming a coder, and a CODE section that is fuzzed bytes or a real coded
    stream with bytes flipped, cut or added (checksums recomputed)."""
    from qmtgan.runtime import entropy
    from qmtgan.runtime import payload as fmt

    valid = fmt.decode(VALID_QMTG)
    header = {**json.loads(json.dumps(valid.header)), "code_coder": coder}
    if data.draw(st.booleans()) and coder in entropy.CODERS:
        code = bytearray(entropy.encode([valid.codes[0]], [4], coder)[1])
        for _ in range(data.draw(st.integers(0, 3))):
            if code:
                code[data.draw(st.integers(0, len(code) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        code = bytes(code[: data.draw(st.integers(0, len(code)))]) + data.draw(st.binary(max_size=8))
    else:
        code = data.draw(st.binary(max_size=300))
    raw = fmt.decode(VALID_QMTG)
    sections = [(b"HEAD", fmt.pack_header(json.dumps(header).encode())),
                (b"SIDE", np.asarray(raw.sides[0], "<f4").tobytes()), (b"CODE", code),
                (b"FLT ", np.asarray(raw.floats[1], "<f4").tobytes()), (b"RES ", b"")]
    _refused_or_parsed(_decode_and_dequantize, fmt.pack_sections(fmt.VERSION, sections))


# --- bundle archive and manifest -------------------------------------------------------------

MEMBER_NAMES = st.sampled_from(["b/manifest.json", "b/model.onnx", "b", "../evil", "/abs/path", "b/../../x",
                                "b/./model.onnx", "c/other", "b/sub/deep", "./b/model.onnx", ""])
KINDS = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                         tarfile.FIFOTYPE, tarfile.BLKTYPE])


def _archive(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, kind, content, declared in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
                if declared:  # a header whose size field lies (huge), with no data behind it
                    liar = tarfile.TarInfo(name + ".big")
                    liar.size = declared
                    tar.fileobj.write(liar.tobuf(tarfile.GNU_FORMAT))
            else:
                info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
                tar.addfile(info)
    return buf.getvalue()


@FUZZ
@given(
    st.lists(
        st.tuples(MEMBER_NAMES, KINDS, st.binary(max_size=64), st.sampled_from([0, 0, 0, 2**40])), max_size=6
    )
    | st.binary(max_size=200).map(lambda b: [b])
)
def test_bundle_archive_loader_refuses_escapes_links_devices_and_lies(members):
    from qmtgan.runtime.archive import safe_extract as _safe_extract

    root = Path(tempfile.mkdtemp(prefix="qmtgan-fuzz-"))
    try:
        archive = root / "bundle.tar.gz"
        archive.write_bytes(members[0] if members and isinstance(members[0], bytes) else _archive(members))
        into = root / "into"
        into.mkdir()
        top = _refused_or_parsed(_safe_extract, archive, into)
        # whatever happened, nothing was written outside `into`, and nothing there is a link
        assert sorted(p.name for p in root.iterdir()) == ["bundle.tar.gz", "into"]
        for p in into.rglob("*"):
            assert not p.is_symlink() and (p.is_file() or p.is_dir())
        if top is not None:
            assert top.parent == into
    finally:
        shutil.rmtree(root)


MANIFEST_KEYS = st.sampled_from(["name", "backend", "model_file", "files", "tile_size", "normalization",
                                 "generator", "bands", "smoke", "elf_machine", "schema", "input", "output",
                                 "manifest_sha256"])
FIELD_VALUES = JSON | st.sampled_from(["../x", "/etc/passwd", "model.onnx", "smoke.npz", "manifest.json",
                                       "tflite", "tvm", "onnxruntime", 16, 32, 0, -1, [1, 16, 16, 12],
                                       {"shape": [1, 32, 32, 12]}, {"file": "model.onnx", "snr_db": 1.0}])
TILE = 16


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """One real bundle (a real ONNX model run by ONNX Runtime, and a second file) whose manifest
    each example replaces."""
    from helpers import conv_onnx_backend
    from qmtgan.runtime.bundle import write_bundle
    from qmtgan.runtime.normalization import Normalization

    folder = tmp_path_factory.mktemp("bundle")
    conv_onnx_backend(folder, TILE)
    norm = Normalization(tuple([0.0] * 12), tuple([1.0] * 12))
    shape = {"shape": [1, TILE, TILE, 12], "dtype": "float32", "quantization": None}
    return write_bundle(folder / "b", {"name": "b", "backend": "onnxruntime", "model_file": "model.onnx",
                                       "tile_size": TILE, "normalization": norm.to_dict(), "generator": {},
                                       "input": shape, "output": shape},
                        {"model.onnx": (folder / "conv.onnx").read_bytes(), "notes.txt": b"not a model"})


def _load_and_run(path: Path):
    """What a device does with a bundle: load (verify), create its backend, run one tile."""
    from qmtgan.runtime.bundle import load_bundle

    bundle = load_bundle(path)
    backend = bundle.backend(threads=1)
    tile = np.zeros((1, bundle.tile, bundle.tile, 12), np.float32)
    assert backend.run(tile).shape == tile.shape
    return bundle


@FUZZ
@given(st.dictionaries(MANIFEST_KEYS, FIELD_VALUES, max_size=4), st.booleans(), st.binary(max_size=40))
def test_bundle_manifests_through_load_and_run(bundle_dir, overrides, resign, raw):
    """Fuzzed fields, re-signed (as an attacker would) or not, then raw bytes: the bundle loads
    and runs a tile, or is refused with one clear error."""
    from qmtgan.runtime.bundle import write_manifest

    original = bundle_dir / "manifest.json.orig"
    if not original.exists():
        shutil.copy(bundle_dir / "manifest.json", original)
    manifest = json.loads(original.read_text())
    if resign:
        write_manifest(bundle_dir, {**manifest, **overrides})
    else:
        (bundle_dir / "manifest.json").write_text(json.dumps({**manifest, **overrides}))
    _refused_or_parsed(_load_and_run, bundle_dir)
    (bundle_dir / "manifest.json").write_bytes(raw)
    _refused_or_parsed(_load_and_run, bundle_dir)
    shutil.copy(original, bundle_dir / "manifest.json")


@FUZZ
@given(st.sampled_from(["w", "w:gz", "w:bz2", "w:xz"]), st.lists(st.tuples(st.integers(0, 10**7), st.binary(
    min_size=1, max_size=4)), max_size=3), st.integers(0, 10**7), st.sampled_from(["", "../", "/", "b/../"]))
def test_bundle_archives_through_load_and_run(bundle_dir, mode, flips, cut, prefix):
    """A real bundle archived with each compression, its member names prefixed, its bytes
    flipped and cut: loads and runs, or is refused; nothing is written outside the scratch."""
    from qmtgan.runtime.bundle import write_manifest

    root = Path(tempfile.mkdtemp(prefix="qmtgan-fuzz-"))
    try:
        original = bundle_dir / "manifest.json.orig"
        if original.exists():
            write_manifest(bundle_dir, json.loads(original.read_text()))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tar:
            tar.add(bundle_dir, arcname=prefix + "b",
                    filter=lambda m: None if m.name.endswith(".orig") else m)
        data = bytearray(buf.getvalue())
        for at, junk in flips:
            at %= len(data)
            data[at:at + len(junk)] = junk
        archive = root / "bundle.tar"
        archive.write_bytes(bytes(data[: len(data) - cut % len(data)] if cut % 7 == 0 else data))
        _refused_or_parsed(_load_and_run, archive)
        assert sorted(p.name for p in root.iterdir()) == ["bundle.tar"]
    finally:
        shutil.rmtree(root)


# --- board TOML ------------------------------------------------------------------------------

def _rpi4_lines() -> list[str]:
    from qmtgan.targets.registry import BOARDS_DIR

    return (BOARDS_DIR / "rpi4.toml").read_text().splitlines()


RPI4 = _rpi4_lines()
TOML_VALUES = st.sampled_from(
    [
        '"x"',
        "1",
        "-3",
        "2.5",
        "true",
        "[1, 2]",
        '["a"]',
        "{a = 1}",
        "1979-05-27",
        '"""m"""',
        "",
        "= =",
        "[",
        "nan",
        "inf",
    ]
)


@FUZZ
@given(st.data())
def test_board_toml_loader_on_hostile_files(data):
    from qmtgan.targets.registry import _load

    lines = list(RPI4)
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["value", "drop", "key", "raw"]))
        if action == "value" and "=" in lines[i]:
            lines[i] = lines[i].split("=")[0] + "= " + data.draw(TOML_VALUES)
        elif action == "drop":
            lines.pop(i)
        elif action == "key":
            lines.insert(
                i, data.draw(st.from_regex(r"[a-z_]{1,8}", fullmatch=True)) + " = " + data.draw(TOML_VALUES)
            )
        else:
            lines[i] = data.draw(st.text(max_size=30))
    root = Path(tempfile.mkdtemp(prefix="qmtgan-fuzz-"))
    try:
        path = root / "board.toml"
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + data.draw(st.binary(max_size=4)))
        _refused_or_parsed(_load, path)
    finally:
        shutil.rmtree(root)
