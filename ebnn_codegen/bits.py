"""Bit layouts shared by the passes, the reference interpreter and the C.

**Activations** (the output of every hidden block, and what a DDNN device
sends): pixel-major, channels packed per pixel, LSB first::

    byte[(y * W + x) * CB + c // 8]  bit (c % 8)  = 1  if activation (c, y, x) is +1
    CB = ceil(C / 8) bytes per pixel; unused high bits of a pixel's last byte are 0.

Worked example, C = 10, H = 1, W = 2, CB = 2 (4 bytes)::

    pixel x=0: channels +1 at c = 0, 3, 9   ->  byte0 = 0b00001001 = 0x09, byte1 = 0b00000010 = 0x02
    pixel x=1: all channels -1              ->  byte2 = 0x00,              byte3 = 0x00

**Binary weights** use the same layout per filter, over the kernel window
``(i, j)`` instead of the pixel: ``byte[(i * kw + j) * CB + c // 8]``.  Pad bits
are 0 in both weights and activations, so ``popcount(a XOR w)`` never counts
them, and one window tap's dot product is ``C - 2 * popcount(a XOR w)``.

**First-block weights** (uint8 input, kept in the input's C, H, W order): per
filter, a bit stream in (c, i, j) order, LSB first, padded to whole bytes.

>>> import numpy as np
>>> a = np.zeros((10, 1, 2), np.int8) - 1; a[[0, 3, 9], 0, 0] = 1
>>> pack_activations(a).tolist()
[9, 2, 0, 0]
>>> unpack_activations(pack_activations(a), (10, 1, 2)).tolist() == a.tolist()
True
"""

from __future__ import annotations

import numpy as np


def bytes_per_pixel(channels: int) -> int:
    return (channels + 7) // 8


def pack_activations(a: np.ndarray) -> np.ndarray:
    """Pack ±1 values shaped (..., C, H, W) into (..., H*W*CB) uint8."""
    a = np.asarray(a)
    *lead, c, h, w = a.shape
    cb = bytes_per_pixel(c)
    bits = np.zeros((*lead, h, w, cb * 8), np.uint8)
    bits[..., :c] = np.moveaxis(a > 0, -3, -1)
    packed = np.packbits(bits, axis=-1, bitorder="little")
    return packed.reshape(*lead, h * w * cb)


def unpack_activations(packed: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`pack_activations`: (..., H*W*CB) uint8 -> (..., C, H, W) int8 ±1."""
    c, h, w = shape
    cb = bytes_per_pixel(c)
    packed = np.asarray(packed, np.uint8)
    lead = packed.shape[:-1]
    bits = np.unpackbits(packed.reshape(*lead, h, w, cb), axis=-1, bitorder="little")[..., :c]
    return np.moveaxis(bits.astype(np.int8) * 2 - 1, -1, -3)


def pack_weights_hwc(w: np.ndarray) -> np.ndarray:
    """Binary-block weights (F, C, kh, kw) ±1 -> (F, kh*kw*CB) uint8 (activation layout per filter)."""
    return pack_activations(w)


def unpack_weights_hwc(packed: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    f, c, kh, kw = shape
    return unpack_activations(packed, (c, kh, kw)).reshape(f, c, kh, kw)


def pack_weights_stream(w: np.ndarray) -> np.ndarray:
    """First-block weights (F, C, kh, kw) ±1 -> (F, ceil(C*kh*kw/8)) uint8, (c, i, j) order, LSB first."""
    f = w.shape[0]
    return np.packbits((np.asarray(w) > 0).reshape(f, -1), axis=-1, bitorder="little")


def unpack_weights_stream(packed: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    f, c, kh, kw = shape
    bits = np.unpackbits(np.asarray(packed, np.uint8), axis=-1, bitorder="little")[:, : c * kh * kw]
    return (bits.astype(np.int8) * 2 - 1).reshape(f, c, kh, kw)


def pack_flags(flags: np.ndarray) -> np.ndarray:
    """A bool vector -> LSB-first bytes (bit i of byte i // 8)."""
    return np.packbits(np.asarray(flags, bool), bitorder="little")


# Bits set in each byte value: the one popcount table (the runtime's ebnn_popcount8 and the
# generated kernels' bounds are both computed from it).
POPCOUNT8: tuple[int, ...] = tuple(bin(v).count("1") for v in range(256))
