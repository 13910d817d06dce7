"""Topics and the control payloads that carry the DDNN messages between processes.

Topics (``SYS`` is the system name, ``[A-Za-z0-9_-]{1,64}``)::

    ddnn/SYS/source/D/view        source -> device D      VIEW: seq u16 | the view's uint8 pixels (C*H*W)
    ddnn/SYS/device/D/scores      device D -> gateway     a SCORES message, byte for byte (docs/ddnn.md)
    ddnn/SYS/device/D/features    device D -> gateway     a FEATURES message, byte for byte, only on request
    ddnn/SYS/gateway/G/request    gateway -> devices      REQUEST: seq u16 | device mask u64
    ddnn/SYS/gateway/G/job        gateway -> one cloud    JOB: seq u16 | mask u64 | the FEATURES messages of
                                                          the masked devices, concatenated in device order
    ddnn/SYS/gateway/G/answer     gateway -> sink         ANSWER: seq u16 | pred u8 | exit u8 | mask u64
    ddnn/SYS/cloud/C/answer       cloud C -> sink         ANSWER (exit = index of "cloud")
    ddnn/SYS/TIER/ID/status       every tier (retained)   b"online", or b"offline" (clean stop or last will)

Clouds subscribe to ``$share/SYS-cloud/ddnn/SYS/gateway/+/job``: the broker
hands each job to one of them.  Every publish is QoS 1; integers are
little-endian; ``mask`` bit d = device d took part (its scores reached the
gateway for REQUEST/ANSWER; its features are in the JOB).

**Sequence numbers** are 16 bits (the DDNN header's): sample ``i`` travels as
``i mod 65536``.  A receiver unwraps a number to the value nearest the newest
one it has seen (serial-number arithmetic as RFC 1982): ``u = top +
((s - top + 32768) mod 65536) - 32768``.  So at most 32 768 samples may be
in flight at once (the source's window is far smaller), and after 65 536
samples the numbers repeat without ambiguity.  A number more than
``max_ahead`` beyond the newest is refused (reason ``sequence``).

Decoders are pure and raise only :class:`~ebnn_codegen.ddnn.messages.MessageError`
(reasons :data:`REASONS`).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from ..messages import FEATURES, MessageError, MessageLayout, decode_message

PREFIX = "ddnn"
TIERS = ("source", "device", "gateway", "cloud")
KINDS = ("view", "scores", "features", "request", "job", "answer", "status")
SYSTEM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SEQ_MOD = 1 << 16
HALF = 1 << 15
MASK_BYTES = 8
ONLINE, OFFLINE = b"online", b"offline"
# Every reason a receiving tier counts: the message codec's, plus those of the transport layer.
REASONS = ("type", "sender", "length", "value", "padding", "topic", "sequence", "duplicate", "late", "unexpected")


def check_system(name: str) -> str:
    if not isinstance(name, str) or not SYSTEM_RE.match(name):
        raise MessageError("topic", f"system name {name!r}: use 1-64 letters, digits, '_' or '-'")
    return name


def topic(system: str, tier: str, ident: int | str, kind: str) -> str:
    """``ddnn/SYS/TIER/ID/KIND`` (``ident`` may be ``+`` in a subscription)."""
    assert tier in TIERS and kind in KINDS, (tier, kind)
    return f"{PREFIX}/{system}/{tier}/{ident}/{kind}"


def shared(group: str, topic_filter: str) -> str:
    """A shared subscription: the broker hands each message to one member of ``group``."""
    return f"$share/{group}/{topic_filter}"


def cloud_group(system: str) -> str:
    return f"{system}-cloud"


@dataclass(frozen=True)
class Topic:
    system: str
    tier: str
    ident: int
    kind: str


def parse_topic(name: str) -> Topic:
    """Split a topic; raises MessageError('topic') for anything not of the form above."""
    parts = name.split("/")
    if len(parts) != 5 or parts[0] != PREFIX or parts[2] not in TIERS or parts[4] not in KINDS:
        raise MessageError("topic", f"not a DDNN topic: {name[:80]!r}")
    if not SYSTEM_RE.match(parts[1]) or not parts[3].isdigit() or len(parts[3]) > 3:
        raise MessageError("topic", f"not a DDNN topic: {name[:80]!r}")
    return Topic(parts[1], parts[2], int(parts[3]), parts[4])


# --------------------------------------------------------------------------- payloads

_SEQ = struct.Struct("<H")
_REQ = struct.Struct("<HQ")
_ANS = struct.Struct("<HBBQ")


def mask_of(devices) -> int:
    m = 0
    for d in devices:
        m |= 1 << int(d)
    return m


def devices_of(mask: int, count: int) -> list[int]:
    return [d for d in range(count) if mask >> d & 1]


def _bytes(data) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageError("type", f"a payload is bytes, got {type(data).__name__}")
    return bytes(data)


def encode_view(seq: int, view: bytes) -> bytes:
    return _SEQ.pack(seq & 0xFFFF) + bytes(view)


def decode_view(data, view_bytes: int) -> tuple[int, bytes]:
    data = _bytes(data)
    if len(data) != 2 + view_bytes:
        raise MessageError("length", f"view of {len(data)} bytes, expected {2 + view_bytes}")
    return _SEQ.unpack_from(data)[0], data[2:]


def encode_request(seq: int, mask: int) -> bytes:
    return _REQ.pack(seq & 0xFFFF, mask)


def decode_request(data, devices: int) -> tuple[int, int]:
    data = _bytes(data)
    if len(data) != _REQ.size:
        raise MessageError("length", f"request of {len(data)} bytes, expected {_REQ.size}")
    seq, mask = _REQ.unpack(data)
    if mask >> devices or not mask:
        raise MessageError("sender", f"request mask {mask:#x} names no device or an unknown one")
    return seq, mask


def encode_answer(seq: int, pred: int, exit_index: int, mask: int) -> bytes:
    return _ANS.pack(seq & 0xFFFF, pred, exit_index, mask)


def decode_answer(data, classes: int, exits: int, devices: int) -> tuple[int, int, int, int]:
    data = _bytes(data)
    if len(data) != _ANS.size:
        raise MessageError("length", f"answer of {len(data)} bytes, expected {_ANS.size}")
    seq, pred, ex, mask = _ANS.unpack(data)
    if pred >= classes or ex >= exits or mask >> devices:
        raise MessageError("value", f"answer out of range (class {pred}, exit {ex}, mask {mask:#x})")
    return seq, pred, ex, mask


def encode_job(seq: int, messages: dict[int, bytes]) -> bytes:
    """JOB: the FEATURES messages of the devices in ``messages``, in device order."""
    return _REQ.pack(seq & 0xFFFF, mask_of(messages)) + b"".join(messages[d] for d in sorted(messages))


def decode_job(data, layout: MessageLayout, devices: int) -> tuple[int, dict[int, bytes]]:
    """Validate a JOB and every FEATURES message in it (sender and sequence must match)."""
    data = _bytes(data)
    if len(data) < _REQ.size:
        raise MessageError("length", f"job of {len(data)} bytes is shorter than its {_REQ.size}-byte header")
    seq, mask = _REQ.unpack_from(data)
    if mask >> devices:
        raise MessageError("sender", f"job mask {mask:#x} names an unknown device")
    want = _REQ.size + sum(layout.features_bytes(d) for d in devices_of(mask, devices))
    if len(data) != want:
        raise MessageError("length", f"job of {len(data)} bytes, expected {want}")
    out: dict[int, bytes] = {}
    pos = _REQ.size
    for d in devices_of(mask, devices):
        size = layout.features_bytes(d)
        msg = decode_message(data[pos : pos + size], layout)
        if msg.kind != FEATURES or msg.sender != d:
            raise MessageError("sender", f"job slot {d} holds a message of sender {msg.sender}")
        if msg.seq != seq:
            raise MessageError("sequence", f"job {seq} holds a message of sample {msg.seq}")
        out[d] = data[pos : pos + size]
        pos += size
    return seq, out


# --------------------------------------------------------------------------- sequence numbers


class SeqUnwrap:
    """16-bit sequence numbers -> unbounded sample numbers (see the module docstring).

    ``start`` is the unwrapped value of the first number seen when nothing is
    known yet: a receiver starts at 0 (its first number is taken as is).
    """

    def __init__(self, max_ahead: int = 4096) -> None:
        if not 0 < max_ahead < HALF:
            raise ValueError("max_ahead must be in 1..32767")
        self.max_ahead = max_ahead
        self.top: int | None = None

    def peek(self, seq: int) -> int:
        """The unwrapped value of ``seq`` (does not move the newest)."""
        seq &= 0xFFFF
        if self.top is None:
            return seq
        return self.top + ((seq - self.top + HALF) % SEQ_MOD) - HALF

    def unwrap(self, seq: int) -> int:
        """Unwrap and accept ``seq``; raises MessageError('sequence') beyond ``max_ahead``."""
        u = self.peek(seq)
        if self.top is not None and u - self.top > self.max_ahead:
            raise MessageError("sequence", f"sample {seq} is {u - self.top} ahead of the newest ({self.top & 0xFFFF})")
        if self.top is None or u > self.top:
            self.top = u
        return u

    def stale(self, u: int) -> bool:
        """True when ``u`` is so far behind that its number may come round again."""
        return self.top is not None and self.top - u >= HALF - self.max_ahead
