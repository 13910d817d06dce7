"""Reader and writer for the IDX file format (MNIST, Fashion-MNIST, ...).

An IDX file is a 4-byte magic number ``00 00 TT DD`` -- two zero bytes, a type
code ``TT`` and the number of dimensions ``DD`` -- followed by ``DD`` big-endian
``uint32`` sizes and the array data in C order, big-endian.  Files may be
gzip-compressed; compression is detected from the content, not the name.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Union

import numpy as np

from .errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

#: IDX type code -> numpy dtype (big-endian as stored in the file).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(DataError, ValueError):
    """Raised when a file is not a well-formed IDX file."""


def _type_code(dtype: np.dtype) -> int:
    for code, idx_dtype in IDX_DTYPES.items():
        if idx_dtype.kind == dtype.kind and idx_dtype.itemsize == dtype.itemsize:
            return code
    supported = ", ".join(str(d.newbyteorder("=")) for d in IDX_DTYPES.values())
    raise IdxFormatError(f"dtype {dtype} cannot be stored in IDX (supported: {supported})")


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the (already decompressed) bytes of an IDX file.

    Args:
        data: file content.
        name: shown in error messages.

    Returns:
        A C-contiguous array in native byte order.

    Raises:
        IdxFormatError: bad magic number, unknown type code, or a data size that
            does not match the dimensions.
    """
    if len(data) < 4:
        raise IdxFormatError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise IdxFormatError(f"{name}: bad IDX magic number 0x{data[:4].hex()} (must start with two zero bytes)")
    if code not in IDX_DTYPES:
        raise IdxFormatError(f"{name}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise IdxFormatError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{name}: truncated IDX header ({ndim} dimensions declared)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        raise IdxFormatError(f"{name}: IDX dimensions {shape} need {expected} data bytes, file has {actual}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return np.ascontiguousarray(array.astype(dtype.newbyteorder("="), copy=True))


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file, plain or gzip-compressed.

    Args:
        path: file to read.

    Returns:
        The array, C-contiguous, native byte order (e.g. ``uint8`` for images).

    Raises:
        IdxFormatError: the content is not valid IDX (or a corrupt gzip stream).
        OSError: the file cannot be read.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise IdxFormatError(f"{path}: corrupt gzip stream: {exc}") from exc
    return parse_idx(raw, str(path))


def write_idx(path: PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file; gzip-compressed if ``path`` ends in ``.gz``.

    Args:
        path: destination file.
        array: array of 1 to 255 dimensions with a dtype IDX supports
            (uint8, int8, int16, int32, float32, float64).

    Raises:
        IdxFormatError: unsupported dtype or number of dimensions, or a
            dimension too large for the format.
    """
    array = np.asarray(array)
    if not 1 <= array.ndim <= 255:
        raise IdxFormatError(f"IDX needs 1 to 255 dimensions, array has {array.ndim}")
    if any(d >= 2**32 for d in array.shape):
        raise IdxFormatError(f"dimension too large for IDX: {array.shape}")
    code = _type_code(array.dtype)
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    path = Path(path)
    if path.name.endswith(".gz"):
        # mtime=0 keeps the output byte-identical across runs.
        payload = gzip.compress(header + body, mtime=0)
    else:
        payload = header + body
    path.write_bytes(payload)
