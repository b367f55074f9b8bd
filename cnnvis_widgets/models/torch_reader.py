"""Restricted, numpy-only reader for LEGACY (pre-zip) PyTorch ``.pth`` state dicts.

Why: the zoo's ImageNet weights ship as legacy torch files, and we want them without
depending on torch and without ever unpickling arbitrary objects.

The legacy layout (``torch.save(..., _use_new_zipfile_serialization=False)``) is a
sequence of pickles followed by raw storages:

1. the magic number ``0x1950a86a20f9469cfc6c``;
2. the protocol version ``1001``;
3. a ``sys_info`` dict (endianness, C type sizes);
4. the object pickle; tensors appear as ``torch._utils._rebuild_tensor_v2(storage, ...)``
   where ``storage`` is a persistent id
   ``('storage', <torch.XStorage>, key, location, numel, view_metadata)``;
5. a pickled list of storage keys;
6. for each key in that order: an 8-byte little-endian element count, then the raw bytes.

Only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the
``torch.*Storage`` types may be referenced by the pickles; anything else raises
:class:`UnsafeWeightsError` before it is called.

Hostile files (issue 19): the pickles run on a pure-Python unpickler with a reduced opcode
table. What the pickle sees of a tensor or storage is a token with no state; the reader keeps
the record (plain tuples of ints) itself, so BUILD cannot rewrite a tensor after it was checked.
BUILD, APPEND and SETITEM are refused on anything but the dicts and lists the pickle built,
dict keys must be str or int (nothing deep is ever hashed), nesting, opcodes, memo indices and
int widths are bounded, and messages describe values briefly instead of repr()-ing them. Each
tensor is checked against its storage's true length after the storages are read (offset and
strides inside it, strides positive, no element read twice), and all tensors together may not
hold more than :data:`MAX_EXPANSION` times the file's bytes (a storage may be shared).
"""

from __future__ import annotations

import collections
import math
import os
import pickle
import pickletools
import struct
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = [
    "UnsafeWeightsError",
    "WeightsFormatError",
    "read_state_dict",
    "ALLOWED_GLOBALS",
    "STORAGE_DTYPES",
    "MAX_FILE_BYTES",
    "MAX_EXPANSION",
    "MAX_TOTAL_BYTES",
    "MAX_DIMS",
    "MAX_DEPTH",
    "MAX_OPCODES",
    "MAX_MEMO_INDEX",
    "MAX_INT_BYTES",
]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
"""torch storage class name -> little-endian numpy dtype of one element."""

ALLOWED_GLOBALS: tuple[str, ...] = (
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    *(f"torch.{name}" for name in STORAGE_DTYPES),
)
"""Every ``module.name`` the restricted unpickler will resolve; all else is refused."""

MAX_FILE_BYTES = 1 << 32
"""Largest file read (the whole file is held in memory)."""
MAX_EXPANSION = 2
"""The arrays returned hold at most this many times the file's bytes (tied weights share one storage)."""
MAX_TOTAL_BYTES = 1 << 32
"""The arrays returned hold at most this many bytes; no tensor's size spans more elements."""
MAX_DIMS = 32
"""Most dimensions of one tensor (numpy 1.x allows 32)."""
MAX_DEPTH = 16
"""Deepest nesting of tuples, lists and dicts in a pickle (a state dict needs 3)."""
MAX_OPCODES = 1 << 20
"""Most opcodes in one pickle (EfficientNet-Lite0's state dict uses 16 000)."""
MAX_MEMO_INDEX = 1 << 20
"""Largest memo index a pickle may store to."""
MAX_INT_BYTES = 32
"""Widest int a pickle may hold, in bytes (the magic number takes 10)."""
_MAX_LINE = 256  # longest line of a text opcode (INT, LONG, GLOBAL, PUT ...), newline included
_DICTS = (dict, collections.OrderedDict)


class UnsafeWeightsError(ValueError):
    """The pickle references a global outside :data:`ALLOWED_GLOBALS`, or tries to change objects."""


class WeightsFormatError(ValueError):
    """The file is not a well-formed legacy torch state dict, or exceeds a limit."""


class _TensorToken:
    """What the pickle holds for a tensor: no state at all; the unpickler keeps its record."""

    __slots__ = ()


class _StorageToken:
    """What the pickle holds for a storage (persistent id); the unpickler keeps its record."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class _StorageType:
    """Marker standing in for a ``torch.XStorage`` class inside the pickle."""

    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise WeightsFormatError(
            f"the pickle tries to construct torch.{self.name} directly; a legacy state "
            "dict only references storages through persistent ids"
        )


def _describe(value: Any) -> str:
    """A short description of a value from the pickle for messages: never a repr of its contents."""
    kind = type(value)
    if value is None or kind in (bool, float):
        return repr(value)
    if kind is int:
        return repr(value) if value.bit_length() <= 64 else f"an int of {value.bit_length()} bits"
    if kind is str:
        return repr(value) if len(value) <= 40 else f"{value[:40]!r}... ({len(value)} chars)"
    small_ints = kind in (tuple, list) and len(value) <= 8
    if small_ints and all(type(v) is int and v.bit_length() <= 64 for v in value):
        return repr(value)
    if kind in (tuple, list, dict, collections.OrderedDict, bytes):
        return f"a {kind.__name__} of {len(value)} item{'' if len(value) == 1 else 's'}"
    if kind is _StorageType:
        return f"torch.{value.name}"
    return {_TensorToken: "a tensor", _StorageToken: "a storage"}.get(kind, f"a {kind.__name__}")


class _Reader:
    """File-like view of the file's bytes for the unpickler: short reads raise, lines are bounded."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def read(self, n: int) -> bytes:
        left = len(self.data) - self.pos
        if n > left and not (left == 0 and n == 1):  # at the very end: EOF for the next opcode
            raise pickle.UnpicklingError(f"pickle data was truncated: {n} bytes wanted, {left} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def readline(self) -> bytes:
        end = self.data.find(b"\n", self.pos, self.pos + _MAX_LINE)
        if end < 0:
            raise WeightsFormatError(f"a text opcode's line is unterminated or longer than {_MAX_LINE} bytes")
        out, self.pos = self.data[self.pos : end + 1], end + 1
        return out


_OPCODE_NAMES = {op.code.encode("latin-1")[0]: op.name for op in pickletools.opcodes}
# Opcodes run as the stdlib's pure-Python unpickler runs them: they only push atoms, move
# things between the stack and the memo, or call find_class / persistent_load (both ours).
_PASS_THROUGH = (
    "PROTO STOP MARK POP POP_MARK DUP NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG "
    "FLOAT BINFLOAT STRING BINSTRING SHORT_BINSTRING UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8 "
    "BINBYTES SHORT_BINBYTES BINBYTES8 GLOBAL STACK_GLOBAL PERSID BINPERSID GET BINGET LONG_BINGET "
    "BINPUT MEMOIZE"
).split()


class _RestrictedUnpickler(pickle._Unpickler):
    """Pure-Python unpickler that resolves only :data:`ALLOWED_GLOBALS` and storage persistent ids.

    Containers built by the pickle are tracked by id (and kept alive, so ids stay unique) with
    their nesting depth; a list or dict may only be filled before it is placed in another object,
    so a container's recorded depth is its true depth.
    """

    dispatch: dict[int, Callable[[Any], None]] = {}  # filled below the class

    def __init__(self, reader: _Reader, what: str, with_storages: bool = False):
        super().__init__(reader)
        self._reader = reader
        self.what = what
        self._with_storages = with_storages
        self.opcodes = 0
        self._depth: dict[int, int] = {}  # id(container) -> nesting depth
        self._nested: set[int] = set()  # ids of containers placed inside another object
        self._keep: list[Any] = []
        self.storages: dict[str, tuple[np.dtype, int]] = {}  # key -> (dtype, numel), from the pids
        self._views: dict[int, tuple[_StorageToken, tuple[str, int, int | None]]] = {}
        self._tensors: dict[int, tuple[_TensorToken, tuple]] = {}
        # Stored once: each access to a bound method makes a new object, and REDUCE checks identity.
        self._new_ordered_dict = self._ordered_dict
        self._rebuild = self._rebuild_tensor_v2

    # ------------------------------------------------------------------ containers

    def _track(self, container, items):
        """Record ``container``'s depth from ``items`` (now nested in it); refuse it past MAX_DEPTH."""
        depth = self._depth.get(id(container), 1)
        for item in items:
            inner = self._depth.get(id(item))
            if inner is not None:
                self._nested.add(id(item))
                depth = max(depth, inner + 1)
        if depth > MAX_DEPTH:
            raise WeightsFormatError(f"the {self.what} pickle nests objects deeper than {MAX_DEPTH} levels")
        if id(container) not in self._depth:
            self._keep.append(container)
        self._depth[id(container)] = depth
        return container

    def _fillable(self, target, kinds: tuple[type, ...], opcode: str):
        """``target`` if the pickle built it as one of ``kinds`` and has not nested it yet."""
        if type(target) not in kinds or id(target) not in self._depth:
            raise UnsafeWeightsError(
                f"refusing {opcode} on {_describe(target)}: "
                f"only a {kinds[0].__name__} the pickle built may be filled"
            )
        if id(target) in self._nested:
            raise UnsafeWeightsError(
                f"refusing {opcode} on a {type(target).__name__} already placed inside another"
            )
        return target

    def _set_items(self, target, items: list, opcode: str) -> None:
        target = self._fillable(target, _DICTS, opcode)
        if len(items) % 2:
            raise WeightsFormatError(f"{opcode} got an odd number ({len(items)}) of keys and values")
        for key in items[0::2]:
            if type(key) not in (str, int):
                raise UnsafeWeightsError(f"refusing dict key {_describe(key)}: keys must be str or int")
        self._track(target, items[1::2])
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def load_empty_tuple(self):
        self.append(self._track((), ()))

    def load_tuple(self):
        items = self.pop_mark()
        self.append(self._track(tuple(items), items))

    def load_tuple1(self):
        self.stack[-1] = self._track((self.stack[-1],), self.stack[-1:])

    def load_tuple2(self):
        self.stack[-2:] = [self._track(tuple(self.stack[-2:]), self.stack[-2:])]

    def load_tuple3(self):
        self.stack[-3:] = [self._track(tuple(self.stack[-3:]), self.stack[-3:])]

    def load_empty_list(self):
        self.append(self._track([], ()))

    def load_list(self):
        items = self.pop_mark()
        self.append(self._track(items, items))

    def load_empty_dict(self):
        self.append(self._track({}, ()))

    def load_dict(self):
        items = self.pop_mark()
        self.append(self._track({}, ()))
        self._set_items(self.stack[-1], items, "DICT")

    def load_append(self):
        value = self.stack.pop()
        self._track(self._fillable(self.stack[-1], (list,), "APPEND"), [value]).append(value)

    def load_appends(self):
        items = self.pop_mark()
        self._track(self._fillable(self.stack[-1], (list,), "APPENDS"), items).extend(items)

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._set_items(self.stack[-1], [key, value], "SETITEM")

    def load_setitems(self):
        items = self.pop_mark()
        self._set_items(self.stack[-1], items, "SETITEMS")

    def load_build(self):
        """Check and drop the state (torch's ``_metadata``): only a dict may take a dict of state."""
        state = self.stack.pop()
        target = self.stack[-1]
        if not (type(target) in _DICTS and id(target) in self._depth and type(state) is dict):
            raise UnsafeWeightsError(
                f"refusing BUILD (set state) on {_describe(target)} with {_describe(state)}: "
                "only a dict may take a dict of state"
            )
        self._nested.add(id(state))

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if not (func is self._new_ordered_dict or func is self._rebuild or type(func) is _StorageType):
            raise UnsafeWeightsError(f"refusing to call {_describe(func)}: only allowed globals are called")
        if type(args) is not tuple:
            raise WeightsFormatError(f"call arguments must be a tuple, got {_describe(args)}")
        self.stack[-1] = func(*args)

    # ------------------------------------------------------------------ framing, memo, ints

    def load_frame(self):
        """FRAME only says how many bytes to buffer: check they are there, then read on unbuffered."""
        (size,) = struct.unpack("<Q", self.read(8))
        if size > len(self._reader.data) - self._reader.pos:
            raise pickle.UnpicklingError(f"pickle data was truncated: a {size}-byte FRAME runs past the end")

    def _put(self, index: int) -> None:
        if not 0 <= index <= MAX_MEMO_INDEX:
            raise WeightsFormatError(f"memo index {_describe(index)} is past the limit [0, {MAX_MEMO_INDEX}]")
        self.memo[index] = self.stack[-1]

    def load_put(self):
        self._put(int(self.readline()[:-1]))

    def load_long_binput(self):
        self._put(struct.unpack("<I", self.read(4))[0])

    def _push_long(self, n: int) -> None:
        if n > MAX_INT_BYTES:
            raise WeightsFormatError(f"an int of {n} bytes, more than the limit of {MAX_INT_BYTES} bytes")
        self.append(pickle.decode_long(self.read(n)))

    def load_long1(self):
        self._push_long(self.read(1)[0])

    def load_long4(self):
        (n,) = struct.unpack("<i", self.read(4))
        if n < 0:
            raise WeightsFormatError(f"LONG4 has a negative byte count {n}")
        self._push_long(n)

    # ------------------------------------------------------------------ globals, storages, tensors

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if qualified == "collections.OrderedDict":
            return self._new_ordered_dict
        if qualified == "torch._utils._rebuild_tensor_v2":
            return self._rebuild
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeWeightsError(
            f"refusing to unpickle global {_describe(qualified)}: only {', '.join(ALLOWED_GLOBALS)} "
            "are allowed in a weights file"
        )

    def _ordered_dict(self, *args: Any) -> collections.OrderedDict:
        """Stand-in for ``collections.OrderedDict()``: empty only (its arguments would be hashed)."""
        if args:
            raise UnsafeWeightsError(f"refusing OrderedDict with {len(args)} arguments: only OrderedDict()")
        return self._track(collections.OrderedDict(), ())

    def persistent_load(self, pid: Any) -> _StorageToken:
        """Record the storage view a persistent id names; give the pickle a token for it."""
        if not self._with_storages:
            raise WeightsFormatError(f"unexpected persistent id {_describe(pid)} outside the object pickle")
        token = _StorageToken()
        self._views[id(token)] = (token, _storage_view(pid, self.storages, len(self._reader.data)))
        return token

    def _rebuild_tensor_v2(self, *args: Any) -> _TensorToken:
        """Stand-in for ``torch._utils._rebuild_tensor_v2``: record the view as plain ints, read later.

        Extra arguments (requires_grad, backward_hooks, metadata) are accepted and ignored.
        """
        if not 4 <= len(args) <= 7:
            raise WeightsFormatError(f"_rebuild_tensor_v2 takes 4 to 7 arguments, got {len(args)}")
        storage, offset, size, stride = args[:4]
        view = self._views.get(id(storage))
        if view is None or view[0] is not storage:
            raise WeightsFormatError(
                f"_rebuild_tensor_v2 expects a storage persistent id, got {_describe(storage)}"
            )
        if type(offset) is not int:
            raise WeightsFormatError(f"tensor storage offset must be an int, got {_describe(offset)}")
        size_t, stride_t = _int_tuple(size, "size"), _int_tuple(stride, "stride")
        if len(size_t) != len(stride_t):
            raise WeightsFormatError(
                f"tensor size {_describe(size)} and stride {_describe(stride)} have different ranks"
            )
        token = _TensorToken()
        self._tensors[id(token)] = (token, (view[1], offset, size_t, stride_t))
        return token

    def tensor_records(self, obj: Any, path: str) -> list[tuple[str, tuple]]:
        """``[(name, record)]`` of the state dict ``obj``, in order, from this unpickler's own records."""
        if type(obj) not in _DICTS:
            raise WeightsFormatError(f"{path} holds {_describe(obj)}, expected a state dict (a mapping)")
        records = []
        for name, value in obj.items():
            entry = self._tensors.get(id(value))
            if type(name) is not str or entry is None or entry[0] is not value:
                raise WeightsFormatError(
                    f"{path} is not a flat state dict of tensors; "
                    f"offending key: {_describe(name)} -> {_describe(value)}"
                )
            records.append((name, entry[1]))
        return records


def _counted(step: Callable[[Any], None]) -> Callable[[Any], None]:
    def counted(self) -> None:
        self.opcodes += 1
        if self.opcodes > MAX_OPCODES:
            raise WeightsFormatError(f"the {self.what} pickle has more than {MAX_OPCODES} opcodes")
        step(self)

    return counted


def _refused(code: int) -> Callable[[Any], None]:
    name = _OPCODE_NAMES.get(code, f"{code:#04x}")

    def refuse(self) -> None:
        raise UnsafeWeightsError(f"refusing pickle opcode {name}: a legacy torch state dict does not use it")

    return refuse


def _opcode(name: str) -> int:
    return getattr(pickle, name)[0]


_OWN_OPS = (
    "EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST LIST EMPTY_DICT DICT APPEND APPENDS "
    "SETITEM SETITEMS BUILD REDUCE FRAME PUT LONG_BINPUT LONG1 LONG4"
).split()
_RestrictedUnpickler.dispatch = {
    **{code: _refused(code) for code in range(256)},
    **{_opcode(name): _counted(pickle._Unpickler.dispatch[_opcode(name)]) for name in _PASS_THROUGH},
    **{_opcode(name): _counted(getattr(_RestrictedUnpickler, f"load_{name.lower()}")) for name in _OWN_OPS},
}


def _storage_view(pid: Any, storages: dict[str, tuple[np.dtype, int]], file_size: int):
    """``(key, view offset, view length or None)`` of ``('storage', type, key, location, numel, view)``.

    Records the storage's dtype and element count in ``storages`` (they must agree each time).
    """
    if not (type(pid) is tuple and len(pid) == 6 and type(pid[0]) is str and pid[0] == "storage"):
        raise WeightsFormatError(
            "persistent id must be ('storage', type, key, location, numel, view_metadata), "
            f"got {_describe(pid)}"
        )
    _, storage_type, key, _location, numel, view_metadata = pid
    if type(storage_type) is not _StorageType:
        raise WeightsFormatError(f"persistent id type must be torch.*Storage, got {_describe(storage_type)}")
    if type(key) is not str or type(numel) is not int or numel < 0:
        raise WeightsFormatError(f"persistent id has a bad key or size: {_describe(key)}, {_describe(numel)}")
    dtype = STORAGE_DTYPES[storage_type.name]
    if numel * dtype.itemsize > file_size:
        raise WeightsFormatError(
            f"storage {_describe(key)} declares {numel} elements ({numel * dtype.itemsize} bytes), "
            f"more than the file's {file_size} bytes"
        )
    root = storages.setdefault(key, (dtype, numel))
    if root != (dtype, numel):
        raise WeightsFormatError(
            f"storage {_describe(key)} is declared twice with different types/sizes: "
            f"{root[0]}[{root[1]}] and {dtype}[{numel}]"
        )
    if view_metadata is None:
        return key, 0, None
    if not (type(view_metadata) is tuple and len(view_metadata) == 3):
        raise WeightsFormatError(f"view metadata must be (key, offset, size), got {_describe(view_metadata)}")
    _view_key, offset, length = view_metadata
    if type(offset) is not int or type(length) is not int or offset < 0 or length < 0:
        raise WeightsFormatError(
            f"storage view of {_describe(key)} at offset {_describe(offset)} has length {_describe(length)}: "
            "both must be ints >= 0"
        )
    if offset + length > numel:
        raise WeightsFormatError(
            f"storage view [{offset}, {offset + length}) does not fit in storage {_describe(key)} "
            f"of {numel} elements"
        )
    return key, offset, length


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    """A tensor size/stride from the pickle as a tuple of at most MAX_DIMS ints (values checked later)."""
    if type(value) not in (tuple, list):
        raise WeightsFormatError(f"tensor {what} must be a tuple of ints, got {_describe(value)}")
    if len(value) > MAX_DIMS:
        raise WeightsFormatError(f"tensor {what} has {len(value)} dimensions, above the limit of {MAX_DIMS}")
    for v in value:
        if type(v) is not int:
            raise WeightsFormatError(f"tensor {what} entries must be ints, got {_describe(v)}")
    return tuple(value)


def _load(reader: _Reader, what: str, with_storages: bool = False) -> tuple[Any, _RestrictedUnpickler]:
    """Unpickle one object with the restricted unpickler; wrap low-level errors."""
    unpickler = _RestrictedUnpickler(reader, what, with_storages)
    try:
        return unpickler.load(), unpickler
    except (UnsafeWeightsError, WeightsFormatError):
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        OverflowError,
        RecursionError,
        struct.error,
    ) as exc:
        detail = str(exc) if len(str(exc)) <= 120 else f"{str(exc)[:120]}..."
        raise WeightsFormatError(f"could not read the {what} pickle: {type(exc).__name__}: {detail}") from exc


def _check_header(reader: _Reader, path: str) -> None:
    """Read magic number, protocol version and sys_info; refuse non-legacy files."""
    if reader.data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise WeightsFormatError(
            f"{path} is a zip-format torch file (torch >= 1.6 default); only the legacy "
            "(pre-zip) format is supported. Re-save it with "
            "torch.save(obj, f, _use_new_zipfile_serialization=False)."
        )
    try:
        magic, _ = _load(reader, "magic number")
    except WeightsFormatError as exc:
        raise WeightsFormatError(f"{path} is not a legacy torch file: {exc}") from exc
    if type(magic) is not int or magic != LEGACY_MAGIC:
        raise WeightsFormatError(
            f"{path} is not a legacy torch file: magic number {_describe(magic)}, expected {LEGACY_MAGIC:#x}"
        )
    version, _ = _load(reader, "protocol version")
    if type(version) is not int or version != LEGACY_PROTOCOL_VERSION:
        raise WeightsFormatError(
            f"{path}: unsupported legacy protocol version {_describe(version)}, "
            f"expected {LEGACY_PROTOCOL_VERSION}"
        )
    sys_info, _ = _load(reader, "sys_info")
    if type(sys_info) in _DICTS and sys_info.get("little_endian") is False:
        raise WeightsFormatError(f"{path} was saved on a big-endian machine, which is not supported")


def _read_storages(
    data: bytes, pos: int, keys: Any, storages: dict[str, tuple[np.dtype, int]]
) -> dict[str, np.ndarray]:
    """Read each storage (int64 element count + raw bytes) in key order, starting at ``pos``."""
    if type(keys) is not list or not all(type(k) is str for k in keys):
        raise WeightsFormatError(f"storage key list must be a list of str, got {_describe(keys)}")
    arrays: dict[str, np.ndarray] = {}
    for key in keys:
        name = f"storage {_describe(key)}"
        if key in arrays:
            raise WeightsFormatError(f"{name} is listed twice in the storage key list")
        if key not in storages:
            raise WeightsFormatError(f"{name} is listed but no tensor references it")
        dtype, numel = storages[key]
        if len(data) - pos < 8:
            raise WeightsFormatError(
                f"file truncated at the size header of {name}: expected 8 bytes, got {len(data) - pos}"
            )
        (count,) = struct.unpack_from("<q", data, pos)
        pos += 8
        if count != numel:
            raise WeightsFormatError(
                f"{name} size mismatch: the pickle declares {numel} elements, "
                f"the data section declares {count}"
            )
        nbytes = count * dtype.itemsize
        got = min(nbytes, len(data) - pos)
        if got < nbytes:
            raise WeightsFormatError(f"file truncated in {name}: expected {nbytes} bytes, got {got}")
        arrays[key] = np.frombuffer(data, dtype=dtype, count=count, offset=pos)
        pos += nbytes
    missing = sorted(set(storages) - set(arrays))
    if missing:
        listed = ", ".join(_describe(k) for k in missing[:5])
        raise WeightsFormatError(f"{len(missing)} storages referenced by tensors are not listed: {listed}")
    return arrays


def _checked_view(name: str, record: tuple, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, tuple, tuple]:
    """``(base, shape, byte strides)`` of one tensor, checked against its storage's true length.

    Sizes and the offset are >= 0, a dimension longer than 1 has a stride >= 1, each stride steps
    past everything the smaller strides reach (no element is read twice), and the last element
    lies inside the storage (view).
    """
    (key, view_offset, view_numel), offset, size, stride = record
    what = f"tensor {_describe(name)}"
    storage = arrays[key]
    end = len(storage) if view_numel is None else view_offset + view_numel
    if end > len(storage):
        raise WeightsFormatError(f"{what}: storage view ends at element {end} of {len(storage)}")
    base = storage[view_offset:end]
    if any(n < 0 for n in size):
        raise WeightsFormatError(f"{what}: size {_describe(size)} has a negative entry")
    span = math.prod(max(n, 1) for n in size)  # elements, or what an empty tensor's other sizes span
    if span > MAX_TOTAL_BYTES:
        raise WeightsFormatError(
            f"{what}: size {_describe(size)} spans {span} elements, above the limit of {MAX_TOTAL_BYTES}"
        )
    if 0 in size:
        return base[:0], size, (0,) * len(size)
    if offset < 0:
        raise WeightsFormatError(f"{what}: storage offset {_describe(offset)} is negative")
    reach = 0  # the furthest element the dimensions with smaller strides reach
    for s, n in sorted((s, n) for n, s in zip(size, stride) if n > 1):
        if s < 1:
            raise WeightsFormatError(
                f"{what}: stride {_describe(s)} on a dimension of size {n}; "
                "strides must be >= 1 where the size is above 1"
            )
        if s <= reach:
            raise WeightsFormatError(
                f"{what}: dimensions overlap (size {_describe(size)}, stride {_describe(stride)}): "
                "elements would be read twice"
            )
        reach += s * (n - 1)
    last = offset + reach
    if last >= len(base):
        raise WeightsFormatError(
            f"{what} of size {_describe(size)}, stride {_describe(stride)}, offset {_describe(offset)} "
            f"reaches element {last} of storage {_describe(key)} which has {len(base)} elements"
        )
    byte_strides = tuple(s * base.itemsize if n > 1 else 0 for n, s in zip(size, stride))
    return base[offset:], size, byte_strides


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a legacy torch ``.pth`` state dict into ``{name: np.ndarray}``, in file order.

    Raises :class:`UnsafeWeightsError` if the pickle references anything outside
    :data:`ALLOWED_GLOBALS` or tries to change objects, and :class:`WeightsFormatError` for
    zip-format, truncated, malformed or oversized files (see the ``MAX_*`` limits).
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise WeightsFormatError(f"{path} is {size} bytes, more than the limit of {MAX_FILE_BYTES} bytes")
        raw = fh.read()
    reader = _Reader(raw)
    _check_header(reader, path)
    obj, unpickler = _load(reader, "state dict", with_storages=True)
    records = unpickler.tensor_records(obj, path)
    keys, _ = _load(reader, "storage keys")
    arrays = _read_storages(raw, reader.pos, keys, unpickler.storages)
    views = [(name, _checked_view(name, record, arrays)) for name, record in records]
    total = sum(math.prod(shape) * base.itemsize for _, (base, shape, _) in views)
    limit = min(MAX_TOTAL_BYTES, MAX_EXPANSION * len(raw))
    if total > limit:
        raise WeightsFormatError(
            f"{path}: the tensors hold {total} bytes, more than {limit} bytes ({MAX_EXPANSION}x the "
            f"file's {len(raw)} bytes, at most {MAX_TOTAL_BYTES}); is one storage behind many names?"
        )
    as_strided = np.lib.stride_tricks.as_strided
    return {
        name: np.array(as_strided(base, shape, strides, writeable=False), copy=True, order="C")
        for name, (base, shape, strides) in views
    }
