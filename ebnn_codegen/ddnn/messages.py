"""The bytes that cross the network between the tiers of a DDNN.

Every message is a 3-byte header and a payload::

    byte 0     bits 7..6: type  (1 = SCORES, 2 = FEATURES; 0 and 3 are invalid)
               bits 5..0: sender id (devices 0..D-1; edges D..D+E-1 send FEATURES)
    bytes 1-2  sequence number of the sample, uint16 little-endian (wraps at 65536)
    payload    SCORES:   K signed integers of score_bits (8 or 16) bits, little-endian;
                         value = round(score * 2**m), m = score_frac_bits; the most
                         negative value (-128 for int8) is reserved and rejected.
               FEATURES: the sender's ±1 feature map (C, H, W) as a dense bit stream
                         in (y, x, c) order, bit i in byte i // 8 at bit i % 8,
                         1 = +1; the unused high bits of the last byte must be 0.

The feature bit order is the core's activation layout (:mod:`ebnn_codegen.bits`)
without the per-pixel padding to whole bytes, so for C a multiple of 8 the
payload is exactly what ``NAME_features`` writes; otherwise the device packs
the pixels' bits back to back (``ddnn_messages.c`` does this on the device).

Worked example: K = 3, int8, m = 4, device 2, sample 258, scores (1.5, -0.25, 7.9)::

    header  0x42 (type 1 << 6 | sender 2), 0x02 0x01 (258 LE)
    payload round(24.0) = 24 -> 0x18, round(-4.0) = -4 -> 0xfc, round(126.4) = 126 -> 0x7e
    -> 42 02 01 18 fc 7e  (6 bytes)

:func:`decode_message` is a pure function of the bytes and the
:class:`MessageLayout` (which both ends know from the model): it never raises
anything but :class:`MessageError`, whose ``reason`` the receiver counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CodegenError

if TYPE_CHECKING:
    from .model import DDNN

SCORES = 1
FEATURES = 2
KIND_NAMES = {SCORES: "scores", FEATURES: "features"}
HEADER_BYTES = 3
MAX_SENDERS = 64

# Reasons a message is rejected (the keys of the receiver's error counters).
REASONS = ("type", "sender", "length", "value", "padding")


class MessageError(CodegenError):
    """A malformed message; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class MessageLayout:
    """What sender and receiver agree on: classes, score format, feature shapes."""

    num_classes: int
    score_bits: int
    score_frac_bits: int
    num_score_senders: int  # senders 0..n-1 may send SCORES
    feature_shapes: tuple[tuple[int, int, int], ...]  # FEATURES shape of sender i

    def __post_init__(self) -> None:
        if self.score_bits not in (8, 16):
            raise ValueError("score_bits must be 8 or 16")
        if not 0 < len(self.feature_shapes) <= MAX_SENDERS or self.num_score_senders > len(self.feature_shapes):
            raise ValueError("between 1 and 64 senders")

    @property
    def qmax(self) -> int:
        return 2 ** (self.score_bits - 1) - 1

    def scores_bytes(self) -> int:
        return HEADER_BYTES + self.num_classes * self.score_bits // 8

    def features_bytes(self, sender: int) -> int:
        c, h, w = self.feature_shapes[sender]
        return HEADER_BYTES + (c * h * w + 7) // 8


@dataclass(frozen=True)
class Message:
    """A decoded, validated message; ``values`` unpacks its payload."""

    kind: int  # SCORES or FEATURES
    sender: int
    seq: int
    payload: bytes  # validated payload bytes
    shape: tuple[int, ...]  # SCORES: (K,); FEATURES: (C, H, W)
    score_bits: int = 8

    @property
    def values(self) -> np.ndarray:
        """SCORES: int32 (K,); FEATURES: int8 ±1 (C, H, W)."""
        if self.kind == SCORES:
            dt = np.dtype("<i1") if self.score_bits == 8 else np.dtype("<i2")
            return np.frombuffer(self.payload, dt).astype(np.int32)
        c, h, w = self.shape
        return unpack_features(np.frombuffer(self.payload, np.uint8), (c, h, w))


# --------------------------------------------------------------------------- fixed point


def quantize_float(scores: np.ndarray, frac_bits: int, bits: int = 8) -> np.ndarray:
    """Float scores -> message integers: clip(floor(score * 2**m + 1/2), -qmax, qmax)."""
    qmax = 2 ** (bits - 1) - 1
    q = np.floor(np.asarray(scores, np.float64) * 2.0**frac_bits + 0.5)
    return np.clip(q, -qmax, qmax).astype(np.int32)


def quantize_fixed(scores: np.ndarray, scale_log2: int, frac_bits: int, bits: int = 8) -> np.ndarray:
    """int32 scores of the generated C (score * 2**scale_log2) -> message integers.

    With ``sh = scale_log2 - m > 0``: ``(S + 2**(sh-1)) >> sh`` (arithmetic
    shift: rounds half up, like :func:`quantize_float`); ``sh <= 0``:
    ``S << -sh``; then clipped to ±qmax.  This is what ``ddnn_messages.c``
    computes on the device.
    """
    qmax = 2 ** (bits - 1) - 1
    s = np.asarray(scores, np.int64)
    sh = int(scale_log2) - int(frac_bits)
    if sh > 0:
        q = (s + (1 << (sh - 1))) >> sh
    else:
        q = s * (1 << -sh)
    return np.clip(q, -qmax, qmax).astype(np.int32)


# --------------------------------------------------------------------------- bit streams


def pack_features(act: np.ndarray) -> np.ndarray:
    """±1 maps (..., C, H, W) -> dense bit streams (..., ceil(C*H*W/8)) uint8, (y, x, c) order, LSB first."""
    a = np.asarray(act)
    *lead, c, h, w = a.shape
    flat = np.moveaxis(a > 0, -3, -1).reshape(*lead, h * w * c)
    return np.packbits(flat, axis=-1, bitorder="little")


def unpack_features(packed: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`pack_features`: (..., nbytes) uint8 -> (..., C, H, W) int8 ±1."""
    c, h, w = shape
    p = np.asarray(packed, np.uint8)
    bits = np.unpackbits(p, axis=-1, bitorder="little", count=c * h * w)
    bits = bits.reshape(*p.shape[:-1], h, w, c)
    return np.moveaxis(bits.astype(np.int8) * 2 - 1, -1, -3)


# --------------------------------------------------------------------------- encode


def _header(kind: int, sender: int, seq: np.ndarray) -> np.ndarray:
    seq = np.asarray(seq, np.int64) & 0xFFFF
    h = np.empty((*seq.shape, HEADER_BYTES), np.uint8)
    h[..., 0] = (kind << 6) | sender
    h[..., 1] = seq & 0xFF
    h[..., 2] = seq >> 8
    return h


def encode_scores_batch(layout: MessageLayout, sender: int, seq: np.ndarray, q: np.ndarray) -> np.ndarray:
    """SCORES messages of one sender for many samples: q (N, K) ints -> (N, bytes) uint8."""
    q = np.asarray(q, np.int64)
    if not 0 <= sender < layout.num_score_senders:
        raise MessageError("sender", f"sender {sender} does not send scores")
    if q.ndim != 2 or q.shape[1] != layout.num_classes:
        raise MessageError("length", f"expected (N, {layout.num_classes}) scores, got {q.shape}")
    if q.size and np.abs(q).max() > layout.qmax:
        raise MessageError("value", f"score out of range ±{layout.qmax}")
    dt = np.dtype("<i1") if layout.score_bits == 8 else np.dtype("<i2")
    payload = q.astype(dt).view(np.uint8).reshape(len(q), -1)
    return np.concatenate([_header(SCORES, sender, np.asarray(seq)), payload], axis=1)


def encode_features_batch(layout: MessageLayout, sender: int, seq: np.ndarray, act: np.ndarray) -> np.ndarray:
    """FEATURES messages of one sender for many samples: act (N, C, H, W) ±1 -> (N, bytes) uint8."""
    if not 0 <= sender < len(layout.feature_shapes):
        raise MessageError("sender", f"unknown sender {sender}")
    shape = layout.feature_shapes[sender]
    act = np.asarray(act)
    if act.ndim != 4 or tuple(act.shape[1:]) != tuple(shape):
        raise MessageError("length", f"expected (N, {', '.join(map(str, shape))}) features, got {act.shape}")
    return np.concatenate([_header(FEATURES, sender, np.asarray(seq)), pack_features(act)], axis=1)


def encode_scores(layout: MessageLayout, sender: int, seq: int, q: np.ndarray) -> bytes:
    return encode_scores_batch(layout, sender, np.array([seq]), np.asarray(q)[None])[0].tobytes()


def encode_features(layout: MessageLayout, sender: int, seq: int, act: np.ndarray) -> bytes:
    return encode_features_batch(layout, sender, np.array([seq]), np.asarray(act)[None])[0].tobytes()


# --------------------------------------------------------------------------- decode


def decode_message(data: bytes, layout: MessageLayout) -> Message:
    """Parse and validate one message.  Pure: same input, same result, no side effects.

    Raises :class:`MessageError` (and nothing else) when the type is not
    SCORES/FEATURES, the sender may not send that type, the length is not the
    one the layout fixes, a score is the reserved minimum, or a feature
    stream's unused bits are not 0.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageError("type", f"a message is bytes, got {type(data).__name__}")
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) < HEADER_BYTES:
        raise MessageError("length", f"{len(data)} bytes is shorter than the {HEADER_BYTES}-byte header")
    kind, sender = data[0] >> 6, data[0] & 0x3F
    seq = data[1] | (data[2] << 8)
    if kind == SCORES:
        if sender >= layout.num_score_senders:
            raise MessageError("sender", f"scores from unknown device {sender}")
        want = layout.scores_bytes()
        if len(data) != want:
            raise MessageError("length", f"scores message of {len(data)} bytes, expected {want}")
        payload = data[HEADER_BYTES:]
        if layout.score_bits == 8:
            bad = b"\x80" in payload
        else:
            bad = bool((np.frombuffer(payload, "<i2") == -32768).any())
        if bad:
            raise MessageError("value", f"a score holds the reserved value {-layout.qmax - 1}")
        return Message(SCORES, sender, seq, payload, (layout.num_classes,), layout.score_bits)
    if kind == FEATURES:
        if sender >= len(layout.feature_shapes):
            raise MessageError("sender", f"features from unknown sender {sender}")
        want = layout.features_bytes(sender)
        if len(data) != want:
            raise MessageError("length", f"features message of {len(data)} bytes, expected {want}")
        shape = layout.feature_shapes[sender]
        nbits = shape[0] * shape[1] * shape[2]
        if nbits % 8 and data[-1] >> (nbits % 8):
            raise MessageError("padding", "unused bits of the last feature byte are not 0")
        return Message(FEATURES, sender, seq, data[HEADER_BYTES:], tuple(shape), layout.score_bits)
    raise MessageError("type", f"unknown message type {kind}")


def message_layout(model: DDNN) -> MessageLayout:
    """The message format both ends derive from the model."""
    s = model.spec
    m = model.calibration.score_frac_bits
    shapes = [s.feature_shape] * s.num_devices
    if s.edge is not None and s.edge_groups is not None:
        shapes += [s.edge.out_shape] * len(s.edge_groups)
    return MessageLayout(
        num_classes=s.num_classes,
        score_bits=int(s.config["messages"]["score_bits"]),
        score_frac_bits=m if m is not None else 0,
        num_score_senders=s.num_devices,
        feature_shapes=tuple(tuple(x) for x in shapes),  # type: ignore[misc]
    )
