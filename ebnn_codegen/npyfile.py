"""Reading a user's .npy file safely: one clear error per defect, never a pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import CodegenError


def load_npy(path: str) -> np.ndarray:
    p = Path(path)
    if p.is_dir():
        raise CodegenError(f"{p}: is a directory, not a .npy file")
    if not p.is_file():
        raise CodegenError(f"{p}: no such file")
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        what = "an empty file" if not magic else "an .npz archive" if magic[:2] == b"PK" else "not a .npy file"
        raise CodegenError(f"{p}: {what}, expected one array saved by numpy.save", hint="np.save(path, x)")
    try:
        array: np.ndarray = np.load(p, allow_pickle=False)
        return array
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise CodegenError(f"{p}: holds Python objects (a pickle), refused; save a uint8 array") from None
        raise CodegenError(f"{p}: damaged or truncated .npy file ({str(exc).split('. ')[0][:120]})") from None
    except Exception as exc:
        raise CodegenError(f"{p}: not a readable .npy array ({str(exc).splitlines()[0][:120]})") from None
