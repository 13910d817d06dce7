"""The host side of the serial agent's protocol: framing, CRC-16, timeouts, retries.

Every exchange with a board goes through :class:`Link` (``run / verify / bench
--port`` and ``flash``'s final check). The protocol (docs/boards.md)::

    0xEB 0x4E | type u8 | seq u8 | length u16 | payload | crc u16     (little-endian)

The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF) over type, seq,
length and payload. Requests: INFO, INFER, LAYER; replies carry the request's
type | 0x80 and its seq; ERROR (0x7F) carries a code and the request's type.

Robustness: every read has a deadline; bytes outside a frame are skipped until the
sync pair; a frame with a bad CRC or an absurd length is dropped; a reply whose seq is
not one of the pending request's tries is ignored; a late answer to an earlier try of
the same request is taken (requests are idempotent: INFER recomputes the same answer);
a request that gets no valid reply in time, or an ERROR for a damaged frame (CRC,
length), is sent again, up to ``retries`` times. Then :class:`BoardError` (exit 3) says what was seen.

Limits: one request in flight; the agent answers in order; payloads up to 65535 bytes.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import CodegenError, ToolError

SYNC = b"\xeb\x4e"
INFO, INFER, LAYER = 0x01, 0x02, 0x03
REPLY = 0x80
ERROR = 0x7F
PROTOCOL_VERSION = 1
FLAG_TRACE = 0x01
INFO_FLAG_TRACE = 0x01
KERNELS = ("fast", "reference")
MAX_PAYLOAD = 16384  # the host refuses longer frames as noise

ERR_CRC, ERR_LENGTH, ERR_TYPE, ERR_NO_TRACE, ERR_BLOCK, ERR_MODEL = 1, 2, 3, 4, 5, 6
ERROR_NAMES = {
    ERR_CRC: "bad CRC",
    ERR_LENGTH: "bad length",
    ERR_TYPE: "unknown request type",
    ERR_NO_TRACE: "no hidden-block outputs kept for the last input",
    ERR_BLOCK: "no such hidden block",
    ERR_MODEL: "the model returned an error",
}
_RETRYABLE = (ERR_CRC, ERR_LENGTH)


class BoardError(ToolError):
    """The board did not answer, or answered nonsense (exit 3)."""


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (check value of b"123456789": 0x29B1)."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def frame(ftype: int, seq: int, payload: bytes = b"") -> bytes:
    """One frame, ready for the wire."""
    if len(payload) > 0xFFFF:
        raise ValueError("payload longer than 65535 bytes")
    body = struct.pack("<BBH", ftype, seq & 0xFF, len(payload)) + payload
    return SYNC + body + struct.pack("<H", crc16(body))


# -- INFO ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Info:
    """What the agent says about itself (the INFO reply)."""

    model_hash: bytes  # 8 bytes: boards.firmware.model_hash of the model it runs
    input_shape: tuple[int, int, int]
    num_classes: int
    score_scale_log2: int
    kernels: str
    block_bytes: tuple[int, ...]
    f_cpu: int
    timer_hz: int
    baud: int
    name: str
    chip: str
    trace: bool = True
    version: int = PROTOCOL_VERSION

    @property
    def hash_hex(self) -> str:
        return self.model_hash.hex()

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "model_hash": self.hash_hex,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "score_scale_log2": self.score_scale_log2,
            "kernels": self.kernels,
            "hidden_block_bytes": list(self.block_bytes),
            "chip": self.chip,
            "f_cpu": self.f_cpu,
            "timer_hz": self.timer_hz,
            "baud": self.baud,
            "protocol": self.version,
        }


def encode_info(info: Info) -> bytes:
    """The INFO payload (the firmware carries these bytes; docs/boards.md has the layout)."""
    name, chip = info.name.encode("ascii"), info.chip.encode("ascii")
    if len(info.model_hash) != 8 or len(name) > 255 or len(chip) > 255 or len(info.block_bytes) > 255:
        raise ValueError("INFO field out of range")
    out = struct.pack("<BB8s", info.version, INFO_FLAG_TRACE if info.trace else 0, info.model_hash)
    out += struct.pack("<HHHHbBB", *info.input_shape, info.num_classes, info.score_scale_log2,
                       KERNELS.index(info.kernels), len(info.block_bytes))  # fmt: skip
    out += struct.pack(f"<{len(info.block_bytes)}H", *info.block_bytes)
    out += struct.pack("<III", info.f_cpu, info.timer_hz, info.baud)
    out += bytes([len(name)]) + name + bytes([len(chip)]) + chip
    return out


def decode_info(payload: bytes) -> Info:
    """Parse an INFO payload; BoardError if it is not one this host understands."""
    try:
        version, flags, mhash = struct.unpack_from("<BB8s", payload, 0)
        if version != PROTOCOL_VERSION:
            raise BoardError(f"the agent speaks protocol version {version}; this ebnn-gen speaks {PROTOCOL_VERSION}")
        c, h, w, k, scale, kern, nh = struct.unpack_from("<HHHHbBB", payload, 10)
        off = 10 + 11
        blocks = struct.unpack_from(f"<{nh}H", payload, off)
        off += 2 * nh
        f_cpu, timer_hz, baud = struct.unpack_from("<III", payload, off)
        off += 12
        n = payload[off]
        name = payload[off + 1 : off + 1 + n].decode("ascii")
        off += 1 + n
        n = payload[off]
        chip = payload[off + 1 : off + 1 + n].decode("ascii")
        if off + 1 + n != len(payload) or kern >= len(KERNELS):
            raise ValueError("length")
    except (struct.error, IndexError, ValueError, UnicodeDecodeError):
        raise BoardError(
            f"the board's INFO reply is malformed ({len(payload)} bytes: {payload[:32].hex()}...)"
        ) from None
    return Info(
        mhash, (c, h, w), k, scale, KERNELS[kern], tuple(blocks), f_cpu, timer_hz, baud, name, chip, bool(flags & 1)
    )


# -- the link -----------------------------------------------------------------------


class _Port(Protocol):  # what Link needs of a pyserial Serial (tests pass fakes)
    timeout: float | None

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class LinkStats:
    requests: int = 0
    retries: int = 0
    dropped_frames: int = 0  # bad CRC or length, wrong seq
    skipped_bytes: int = 0  # bytes outside any frame


def open_port(port: str, baud: int) -> Any:
    """Open a serial port with pyserial (exit 2 for a port that is not there or not allowed)."""
    try:
        import serial  # pyserial
    except ImportError:
        raise CodegenError(
            "--port needs pyserial", hint="pip install 'ebnn-codegen[boards]' (or pip install pyserial)"
        ) from None
    if not os.path.exists(port) and not port.startswith(("socket://", "rfc2217://", "loop://")):
        raise CodegenError(
            f"{port}: no such serial port", hint="is the board plugged in? (ls /dev/ttyACM* /dev/ttyUSB*)"
        )
    try:
        return serial.Serial(port, baud, timeout=0.1, write_timeout=5.0)
    except serial.SerialException as exc:
        text = str(exc)
        if "Permission denied" in text:
            raise CodegenError(
                f"{port}: permission denied", hint="add yourself to the 'dialout' group and log in again"
            ) from None
        raise CodegenError(f"{port}: cannot open the serial port ({text.splitlines()[0][:160]})") from None


class Link:
    """A connection to the agent on a board: ``info()``, ``infer()``, ``layer()``.

    ``boot_wait_s``: opening a USB serial board resets it (DTR); its bootloader then
    listens for about a second, and bytes sent to it then could be taken for upload
    commands, so nothing is sent before this many seconds. ``timeout_s``: how long one
    try waits for the reply (the agent's inference time comes on top, see ``infer``).
    """

    def __init__(
        self,
        port: Any,
        name: str = "",
        boot_wait_s: float = 0.0,
        timeout_s: float = 1.0,
        retries: int = 3,
        baud: int = 115200,
    ) -> None:
        self.ser: _Port = port
        self.baud = baud
        self.name = name or str(getattr(port, "port", "the port"))
        self.timeout_s = timeout_s
        self.retries = retries
        self.seq = 0
        self.stats = LinkStats()
        self.seen = bytearray()  # a sample of bytes that were not frames (for error messages)
        if boot_wait_s > 0:
            time.sleep(boot_wait_s)
            self.ser.reset_input_buffer()

    @classmethod
    def open(cls, port: str, baud: int, boot_wait_s: float, timeout_s: float = 1.0, retries: int = 3) -> Link:
        return cls(open_port(port, baud), port, boot_wait_s, timeout_s, retries, baud)

    def close(self) -> None:
        self.ser.close()

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------

    def _read(self, n: int, deadline: float) -> bytes | None:
        """Exactly n bytes, or None at the deadline."""
        out = bytearray()
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.ser.timeout = min(left, 0.5)
            chunk = self.ser.read(n - len(out))
            out += chunk
        return bytes(out)

    def _skip(self, b: bytes) -> None:
        self.stats.skipped_bytes += len(b)
        if len(self.seen) < 64:
            self.seen += b[: 64 - len(self.seen)]

    def read_frame(self, deadline: float) -> tuple[int, int, bytes] | None:
        """The next valid frame (type, seq, payload), or None at the deadline."""
        while True:
            b = self._read(1, deadline)
            if b is None:
                return None
            if b != SYNC[:1]:
                self._skip(b)
                continue
            b = self._read(1, deadline)
            while b == SYNC[:1]:
                b = self._read(1, deadline)
            if b is None:
                return None
            if b != SYNC[1:]:
                self._skip(b)
                continue
            head = self._read(4, deadline)
            if head is None:
                return None
            ftype, seq, length = struct.unpack("<BBH", head)
            if length > MAX_PAYLOAD:
                self.stats.dropped_frames += 1
                continue
            rest = self._read(length + 2, deadline)
            if rest is None:
                return None
            payload, (crc,) = rest[:length], struct.unpack("<H", rest[length:])
            if crc16(head + payload) != crc:
                self.stats.dropped_frames += 1
                continue
            return ftype, seq, payload

    # -- requests -----------------------------------------------------------------

    def request(self, rtype: int, payload: bytes = b"", extra_s: float = 0.0) -> bytes:
        """Send a request and return the reply's payload (retrying as the module says)."""
        self.stats.requests += 1
        last = "no reply"
        sent: set[int] = set()  # the seqs of this request's tries: a late answer to any is the answer
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            self.seq = (self.seq + 1) & 0xFF
            sent.add(self.seq)
            data = frame(rtype, self.seq, payload)
            self.ser.write(data)
            wire_s = 10.0 * len(data) / self.baud  # 8N1: 10 bits a byte
            deadline = time.monotonic() + wire_s + self.timeout_s + extra_s
            while True:
                got = self.read_frame(deadline)
                if got is None:
                    break
                ftype, seq, body = got
                if seq not in sent:
                    self.stats.dropped_frames += 1
                    continue
                if ftype == rtype | REPLY:
                    return body
                if seq != self.seq:
                    continue  # an error about an earlier try
                if ftype == ERROR and len(body) == 2:
                    code = body[0]
                    what = ERROR_NAMES.get(code, f"error {code}")
                    if code in _RETRYABLE:
                        last = f"the board reported {what}"
                        break
                    raise BoardError(f"{self.name}: the board refused the request: {what}")
                self.stats.dropped_frames += 1
        seen = ""
        if self.seen:
            seen = f"; {self.stats.skipped_bytes} bytes that were not frames came, e.g. {bytes(self.seen[:24])!r}"
        raise BoardError(
            f"{self.name}: no valid answer from the ebnn agent after {self.retries + 1} tries ({last}{seen}); "
            f"is the board flashed with `ebnn-gen flash`, and is this its port?"
        )

    def info(self) -> Info:
        return decode_info(self.request(INFO))

    def infer(self, x: bytes, trace: bool, extra_s: float = 0.0) -> tuple[int, list[int], int]:
        """(predicted class, int32 scores, timer ticks of the inference)."""
        body = self.request(INFER, bytes([FLAG_TRACE if trace else 0]) + x, extra_s)
        k = (len(body) - 6) // 4
        if len(body) != 6 + 4 * k or k < 1:
            raise BoardError(f"{self.name}: malformed INFER reply ({len(body)} bytes)")
        pred = struct.unpack_from("<H", body)[0]
        scores = list(struct.unpack_from(f"<{k}i", body, 2))
        (ticks,) = struct.unpack_from("<I", body, 2 + 4 * k)
        return pred, scores, ticks

    def layer(self, block: int) -> bytes:
        body = self.request(LAYER, bytes([block]))
        if not body or body[0] != block:
            raise BoardError(f"{self.name}: malformed LAYER reply for block {block}")
        return body[1:]
