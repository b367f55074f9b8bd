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
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "UnsafeWeightsError",
    "WeightsFormatError",
    "read_state_dict",
    "ALLOWED_GLOBALS",
    "STORAGE_DTYPES",
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


class UnsafeWeightsError(ValueError):
    """The file's pickle references a global outside :data:`ALLOWED_GLOBALS`."""


class WeightsFormatError(ValueError):
    """The file is not a well-formed legacy torch state dict."""


@dataclass(frozen=True)
class _StorageType:
    """Marker standing in for a ``torch.XStorage`` class inside the pickle."""

    name: str
    dtype: np.dtype

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise WeightsFormatError(
            f"the pickle tries to construct torch.{self.name} directly; a legacy state "
            "dict only references storages through persistent ids"
        )


@dataclass(frozen=True)
class _StorageRef:
    """A storage named by a persistent id; its bytes come after the pickles."""

    key: str
    dtype: np.dtype
    numel: int
    view_offset: int = 0  # element offset into the root storage (old view storages)
    view_numel: int | None = None


@dataclass(frozen=True)
class _PendingTensor:
    """A tensor whose storage bytes have not been read yet."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _as_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    """Validate a shape/stride given by the pickle as a tuple of non-negative ints."""
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise WeightsFormatError(f"tensor {what} must be a tuple of non-negative ints, got {value!r}")
    return tuple(value)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_rest) -> _PendingTensor:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: record the view, read later.

    Extra arguments (requires_grad, backward_hooks, metadata) are accepted and ignored.
    """
    if not isinstance(storage, _StorageRef):
        raise WeightsFormatError(
            f"_rebuild_tensor_v2 expects a storage persistent id, got {type(storage).__name__}"
        )
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise WeightsFormatError(f"tensor storage offset must be an int >= 0, got {storage_offset!r}")
    size_t = _as_int_tuple(size, "size")
    stride_t = _as_int_tuple(stride, "stride")
    if len(size_t) != len(stride_t):
        raise WeightsFormatError(f"tensor size {size_t} and stride {stride_t} have different ranks")
    return _PendingTensor(storage, storage_offset, size_t, stride_t)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`ALLOWED_GLOBALS` and storage persistent ids."""

    def __init__(self, file: io.BufferedIOBase, storages: dict[str, _StorageRef] | None = None):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if qualified == "collections.OrderedDict":
            return collections.OrderedDict
        if qualified == "torch._utils._rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        raise UnsafeWeightsError(
            f"refusing to unpickle global {qualified!r}: only {', '.join(ALLOWED_GLOBALS)} "
            "are allowed in a weights file"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        if self._storages is None:
            raise WeightsFormatError(f"unexpected persistent id {pid!r} outside the object pickle")
        return _storage_from_pid(pid, self._storages)


def _storage_from_pid(pid: Any, storages: dict[str, _StorageRef]) -> _StorageRef:
    """Turn ``('storage', type, key, location, numel, view_metadata)`` into a ref."""
    if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
        raise WeightsFormatError(
            f"persistent id must be ('storage', type, key, location, numel, view_metadata), got {pid!r}"
        )
    _, storage_type, key, _location, numel, view_metadata = pid
    if not isinstance(storage_type, _StorageType):
        raise WeightsFormatError(f"persistent id storage type must be a torch.*Storage, got {storage_type!r}")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
        raise WeightsFormatError(f"persistent id has a bad key or element count: {pid!r}")
    root = storages.get(key)
    if root is None:
        root = storages[key] = _StorageRef(key, storage_type.dtype, numel)
    elif root.dtype != storage_type.dtype or root.numel != numel:
        raise WeightsFormatError(
            f"storage {key!r} is declared twice with different types/sizes: "
            f"{root.dtype}[{root.numel}] and {storage_type.dtype}[{numel}]"
        )
    if view_metadata is None:
        return root
    if not (isinstance(view_metadata, tuple) and len(view_metadata) == 3):
        raise WeightsFormatError(f"view metadata must be (view_key, offset, size), got {view_metadata!r}")
    _view_key, view_offset, view_numel = view_metadata
    if not (isinstance(view_offset, int) and isinstance(view_numel, int)) or not (
        0 <= view_offset and view_offset + view_numel <= numel
    ):
        raise WeightsFormatError(
            f"storage view {view_metadata!r} does not fit in storage {key!r} of {numel} elements"
        )
    return _StorageRef(key, storage_type.dtype, numel, view_offset, view_numel)


def _load_restricted(stream: io.BufferedIOBase, what: str, storages=None) -> Any:
    """Unpickle one object with the restricted unpickler; wrap low-level errors."""
    try:
        return _RestrictedUnpickler(stream, storages).load()
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
        struct.error,
    ) as exc:
        raise WeightsFormatError(f"could not read the {what} pickle: {type(exc).__name__}: {exc}") from exc


def _check_header(stream: io.BufferedIOBase, path: str) -> None:
    """Read magic number, protocol version and sys_info; refuse non-legacy files."""
    head = stream.read(4)
    stream.seek(0)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        raise WeightsFormatError(
            f"{path} is a zip-format torch file (torch >= 1.6 default); only the legacy "
            "(pre-zip) format is supported. Re-save it with "
            "torch.save(obj, f, _use_new_zipfile_serialization=False)."
        )
    try:
        magic = _load_restricted(stream, "magic number")
    except WeightsFormatError as exc:
        raise WeightsFormatError(f"{path} is not a legacy torch file: {exc}") from exc
    if magic != LEGACY_MAGIC:
        raise WeightsFormatError(
            f"{path} is not a legacy torch file: magic number {magic!r}, expected {LEGACY_MAGIC:#x}"
        )
    version = _load_restricted(stream, "protocol version")
    if version != LEGACY_PROTOCOL_VERSION:
        raise WeightsFormatError(
            f"{path}: unsupported legacy protocol version {version!r}, expected {LEGACY_PROTOCOL_VERSION}"
        )
    sys_info = _load_restricted(stream, "sys_info")
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise WeightsFormatError(f"{path} was saved on a big-endian machine, which is not supported")


def _read_storages(
    data: memoryview, pos: int, keys: list[str], storages: dict[str, _StorageRef]
) -> dict[str, np.ndarray]:
    """Read each storage (int64 element count + raw bytes) in key order, starting at ``pos``."""
    arrays: dict[str, np.ndarray] = {}
    for key in keys:
        ref = storages.get(key)
        if ref is None:
            raise WeightsFormatError(f"storage {key!r} is listed but no tensor references it")
        if len(data) - pos < 8:
            raise WeightsFormatError(
                f"file truncated at the size header of storage {key!r}: expected 8 bytes, "
                f"got {len(data) - pos}"
            )
        (count,) = struct.unpack_from("<q", data, pos)
        pos += 8
        if count != ref.numel:
            raise WeightsFormatError(
                f"storage {key!r} size mismatch: the pickle declares {ref.numel} elements, "
                f"the data section declares {count}"
            )
        nbytes = count * ref.dtype.itemsize
        got = min(nbytes, len(data) - pos)
        if got < nbytes:
            raise WeightsFormatError(f"file truncated in storage {key!r}: expected {nbytes} bytes, got {got}")
        arrays[key] = np.frombuffer(data, dtype=ref.dtype, count=count, offset=pos)
        pos += nbytes
    missing = sorted(set(storages) - set(arrays))
    if missing:
        raise WeightsFormatError(f"storages referenced by tensors but not listed in the file: {missing}")
    return arrays


def _materialize(t: _PendingTensor, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Copy a strided view of its storage into a fresh, contiguous numpy array."""
    ref = t.storage
    base = arrays[ref.key][ref.view_offset :]
    if ref.view_numel is not None:
        base = base[: ref.view_numel]
    if any(s == 0 for s in t.size):
        return np.zeros(t.size, dtype=base.dtype)
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
    if last >= len(base):
        raise WeightsFormatError(
            f"tensor of size {t.size}, stride {t.stride}, offset {t.offset} reaches element "
            f"{last} of storage {ref.key!r} which has {len(base)} elements"
        )
    item = base.itemsize
    view = np.lib.stride_tricks.as_strided(
        base[t.offset :], shape=t.size, strides=tuple(s * item for s in t.stride), writeable=False
    )
    return np.array(view, copy=True, order="C")


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a legacy torch ``.pth`` state dict into ``{name: np.ndarray}``, in file order.

    Raises :class:`UnsafeWeightsError` if the pickle references anything outside
    :data:`ALLOWED_GLOBALS`, and :class:`WeightsFormatError` for zip-format, truncated
    or otherwise malformed files.
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    stream = io.BytesIO(raw)
    _check_header(stream, path)
    storages: dict[str, _StorageRef] = {}
    obj = _load_restricted(stream, "state dict", storages)
    keys = _load_restricted(stream, "storage keys")
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise WeightsFormatError(f"storage key list must be a list of str, got {type(keys).__name__}")
    if not isinstance(obj, dict):
        raise WeightsFormatError(f"{path} holds a {type(obj).__name__}, expected a state dict (a mapping)")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, _PendingTensor))]
    if bad:
        raise WeightsFormatError(f"{path} is not a flat state dict of tensors; offending keys: {bad[:5]!r}")
    arrays = _read_storages(memoryview(raw), stream.tell(), keys, storages)
    return {k: _materialize(v, arrays) for k, v in obj.items()}
