"""The object a tier talks through: an in-memory broker, or an MQTT client (paho-mqtt).

Both offer ``connect(subscriptions, status_topic)``, ``receive(timeout)``
(every delivery waiting, as ``(topic, payload, token)``), ``send(topic,
payload)``, ``ack(token)``, ``close()`` and byte counters per topic kind.

:class:`MqttTransport` speaks MQTT 5 through paho-mqtt: QoS 1 for every
publish and subscription; a fixed client id and a persistent session
(``clean_start`` false, session expiry ``session_expiry`` s) so that a
restarted process, or a restarted broker with persistence, hands over what
was queued; **manual acknowledgement** (a message is PUBACKed when the tier
says its work is done, so a killed process gets it again); receive maximum
65535 so that held acknowledgements do not stall delivery; a retained
``online`` status on connect and ``offline`` as its last will and on a clean
stop; automatic reconnection (``clean_start`` true discards an old session first,
see :meth:`MqttTransport._discard_session`; every connection then resumes it).  A token from an earlier connection is not
acknowledged (the broker redelivers that message on the new one).

Byte counters (``wire_bytes``): per kind (the last topic level), payload
bytes and MQTT overhead (PUBLISH fixed and variable header; the PUBACK)
of the messages this client sent and received, computed from the MQTT 5
packet layout (no properties on PUBLISH/PUBACK).
"""

from __future__ import annotations

import itertools
import queue
import socket
import ssl
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ...errors import CodegenError, ToolError
from . import wire

RECEIVE_MAXIMUM = 65535
DEFAULT_SESSION_EXPIRY = 3600
PUBACK_BYTES = 4


def _varint_len(n: int) -> int:
    size = 1
    while n >= 128:
        n >>= 7
        size += 1
    return size


def publish_overhead(topic: str, payload_len: int, qos: int = 1) -> int:
    """Bytes of an MQTT 5 PUBLISH packet besides the payload (no properties)."""
    rem = 2 + len(topic.encode()) + (2 if qos else 0) + 1 + payload_len
    return 1 + _varint_len(rem) + rem - payload_len


class WireCount:
    """Payload and overhead bytes per kind and direction."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, direction: str, topic: str, payload_len: int) -> None:
        kind = topic.rsplit("/", 1)[-1]
        with self.lock:
            d = self.data[kind]
            d[f"{direction}_messages"] += 1
            d[f"{direction}_payload"] += payload_len
            d[f"{direction}_overhead"] += publish_overhead(topic, payload_len) + PUBACK_BYTES

    def as_dict(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {k: dict(v) for k, v in self.data.items()}


# --------------------------------------------------------------------------- in memory


class MemoryBroker:
    """Topic routing in one process (wildcards ``+``/``#``, ``$share/GROUP/...``, retained messages)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.subs: list[tuple[str, str | None, MemoryTransport]] = []
        self.retained: dict[str, bytes] = {}
        self._rr = itertools.count()

    @staticmethod
    def matches(flt: str, topic: str) -> bool:
        f, t = flt.split("/"), topic.split("/")
        for i, part in enumerate(f):
            if part == "#":
                return True
            if i >= len(t) or (part != "+" and part != t[i]):
                return False
        return len(f) == len(t)

    def subscribe(self, flt: str, client: MemoryTransport) -> None:
        group = None
        if flt.startswith("$share/"):
            _, group, flt = flt.split("/", 2)
        with self.lock:
            self.subs.append((flt, group, client))
            retained = [(t, p) for t, p in self.retained.items() if self.matches(flt, t)]
        for t, p in retained:
            client.deliver(t, p)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        with self.lock:
            if retain:
                self.retained[topic] = payload
            targets: list[MemoryTransport] = []
            groups: dict[str, list[MemoryTransport]] = {}
            for flt, group, client in self.subs:
                if self.matches(flt, topic):
                    if group is None:
                        if client not in targets:
                            targets.append(client)
                    else:
                        groups.setdefault(group, []).append(client)
            for members in groups.values():
                targets.append(members[next(self._rr) % len(members)])
        for client in targets:
            client.deliver(topic, payload)


class MemoryTransport:
    """A tier's transport through a :class:`MemoryBroker` (acknowledgements are no-ops)."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.queue: queue.Queue[tuple[str, bytes, Any]] = queue.Queue()
        self.wire = WireCount()
        self.status_topic: str | None = None

    def deliver(self, topic: str, payload: bytes) -> None:
        self.wire.add("in", topic, len(payload))
        self.queue.put((topic, payload, None))

    def connect(self, subscriptions: list[str], status_topic: str | None = None) -> None:
        for s in subscriptions:
            self.broker.subscribe(s, self)
        self.status_topic = status_topic
        if status_topic:
            self.send(status_topic, wire.ONLINE, retain=True)

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.wire.add("out", topic, len(payload))
        self.broker.publish(topic, payload, retain)

    def ack(self, token: Any) -> None:
        pass

    def receive(self, timeout: float | None, limit: int = 512) -> list[tuple[str, bytes, Any]]:
        return _drain(self.queue, timeout, limit)

    def close(self, timeout: float = 5.0) -> None:
        if self.status_topic:
            self.send(self.status_topic, wire.OFFLINE, retain=True)


def _drain(q: queue.Queue, timeout: float | None, limit: int) -> list:
    try:
        first = q.get(timeout=timeout) if timeout is None or timeout > 0 else q.get_nowait()
    except queue.Empty:
        return []
    out = [first]
    while len(out) < limit:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            break
    return out


# --------------------------------------------------------------------------- MQTT


@dataclass
class BrokerOptions:
    """Where and how to reach the broker (the ``--broker`` URL and the MQTT options)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    tls_insecure: bool = False
    keepalive: int = 10
    session_expiry: int = DEFAULT_SESSION_EXPIRY


def parse_broker(url: str, **options: Any) -> BrokerOptions:
    """``mqtt://HOST:PORT`` (default port 1883) or ``mqtts://HOST:PORT`` (TLS, default 8883)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CodegenError(f"--broker {url!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/"):
        raise CodegenError(f"--broker {url!r}: expected mqtt://HOST:PORT or mqtts://HOST:PORT")
    if parts.username or parts.password:
        raise CodegenError("--broker: give credentials with --username and --password-file, not in the URL")
    tls = parts.scheme == "mqtts" or bool(options.get("cafile"))
    opts = BrokerOptions(parts.hostname, port or (8883 if parts.scheme == "mqtts" else 1883), tls=tls)
    pw_file = options.pop("password_file", None)
    for k, v in options.items():
        if v is not None:
            setattr(opts, k, v)
    if pw_file is not None:
        p = Path(pw_file)
        if not p.is_file():
            raise CodegenError(f"--password-file {pw_file}: no such file")
        opts.password = p.read_text().splitlines()[0] if p.read_text() else ""
    if opts.password is not None and opts.username is None:
        raise CodegenError("--password-file needs --username")
    for name in ("cafile", "certfile", "keyfile"):
        v = getattr(opts, name)
        if v is not None and not Path(v).is_file():
            raise CodegenError(f"--{name} {v}: no such file")
    if (opts.certfile is None) != (opts.keyfile is None):
        raise CodegenError("--certfile and --keyfile go together")
    return opts


class MqttTransport:
    """A tier's MQTT client (see the module docstring)."""

    def __init__(self, opts: BrokerOptions, client_id: str, clean_start: bool = False, manual_ack: bool = True) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise CodegenError("the networked DDNN needs paho-mqtt", hint="pip install 'ebnn-codegen[net]'") from None

        self.mqtt = mqtt
        self.opts = opts
        self.client_id = client_id
        self.clean_start = clean_start
        self.manual_ack = manual_ack
        self.queue: queue.Queue[tuple[str, bytes, Any]] = queue.Queue()
        self.wire = WireCount()
        self.subscriptions: list[str] = []
        self.status_topic: str | None = None
        self.generation = 0
        self.connected = threading.Event()
        self.refused: str | None = None
        self.outstanding: set[int] = set()  # mids of our publishes the broker has not acknowledged
        self.acked_early: set[int] = set()
        self.lock = threading.Lock()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack
        )
        if opts.username is not None:
            c.username_pw_set(opts.username, opts.password)
        if opts.tls:
            c.tls_set(ca_certs=opts.cafile, certfile=opts.certfile, keyfile=opts.keyfile, cert_reqs=ssl.CERT_REQUIRED)
            if opts.tls_insecure:
                c.tls_insecure_set(True)
        c.max_queued_messages_set(0)
        c.max_inflight_messages_set(1000)
        c.reconnect_delay_set(0.05, 1.0)  # type: ignore[arg-type]  # paho takes float seconds
        c.on_socket_open = self._on_socket_open
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        self.client = c

    # paho callbacks (network thread)
    @staticmethod
    def _on_socket_open(client, userdata, sock) -> None:
        """No Nagle delay: the messages are small and every hop waits for the previous one."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # a TLS wrapper or a non-TCP socket
            pass

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            return
        with self.lock:
            self.generation += 1
        for s in self.subscriptions:
            client.subscribe(s, qos=1)
        if self.status_topic:
            client.publish(self.status_topic, wire.ONLINE, qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.lock:
            if mid in self.outstanding:
                self.outstanding.discard(mid)
            else:
                self.acked_early.add(mid)

    def _on_message(self, client, userdata, msg) -> None:
        self.wire.add("in", msg.topic, len(msg.payload))
        self.queue.put((msg.topic, bytes(msg.payload), (self.generation, msg.mid, msg.qos)))

    def connect(self, subscriptions: list[str], status_topic: str | None = None, timeout: float = 30.0) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.subscriptions = list(subscriptions)
        self.status_topic = status_topic
        if status_topic:
            self.client.will_set(status_topic, wire.OFFLINE, qos=1, retain=True)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(self.opts.session_expiry)
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        try:
            if self.clean_start:
                self._discard_session()
            self.client.connect(
                self.opts.host, self.opts.port, keepalive=self.opts.keepalive, clean_start=False, properties=props
            )
        except (OSError, ssl.SSLError) as exc:
            raise ToolError(f"cannot reach the MQTT broker at {self.opts.host}:{self.opts.port}: {exc}") from None
        self.client.loop_start()
        t_end = time.monotonic() + timeout
        while not self.connected.wait(0.05):
            if self.refused is not None:
                self.client.loop_stop()
                raise ToolError(f"the MQTT broker refused the connection: {self.refused}")
            if time.monotonic() > t_end:
                self.client.loop_stop()
                raise ToolError(f"no answer from the MQTT broker at {self.opts.host}:{self.opts.port} in {timeout:g} s")

    def _discard_session(self) -> None:
        """Connect once with clean start and no session expiry, then disconnect: the old session is gone.

        (The real connection then uses clean start 0: mosquitto 2.0 does not persist a session whose
        connection began with clean start 1, even with a session expiry.)
        """
        mqtt = self.mqtt
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        if self.opts.username is not None:
            c.username_pw_set(self.opts.username, self.opts.password)
        if self.opts.tls:
            c.tls_set(ca_certs=self.opts.cafile, certfile=self.opts.certfile, keyfile=self.opts.keyfile)
            if self.opts.tls_insecure:
                c.tls_insecure_set(True)
        done = threading.Event()
        result: list[Any] = []

        def on_connect(client, userdata, flags, reason_code, properties) -> None:
            result.append(reason_code)
            done.set()

        c.on_connect = on_connect
        c.connect(self.opts.host, self.opts.port, keepalive=self.opts.keepalive, clean_start=True)
        c.loop_start()
        done.wait(30)
        c.disconnect()
        c.loop_stop()
        if result and result[0].is_failure:
            self.refused = str(result[0])

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.wire.add("out", topic, len(payload))
        # not under self.lock: paho calls on_publish holding its own lock, which publish() takes too
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self.lock:  # the broker may have acknowledged it already
            if info.mid in self.acked_early:
                self.acked_early.discard(info.mid)
            else:
                self.outstanding.add(info.mid)

    def ack(self, token: Any) -> None:
        if token is None or not self.manual_ack:
            return
        gen, mid, qos = token
        if qos and gen == self.generation:
            self.client.ack(mid, qos)

    def receive(self, timeout: float | None, limit: int = 512) -> list[tuple[str, bytes, Any]]:
        return _drain(self.queue, timeout, limit)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every publish is acknowledged by the broker; False on timeout."""
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            with self.lock:
                if not self.outstanding:
                    return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Publish ``offline`` (retained), wait for outstanding publishes, disconnect cleanly."""
        if self.status_topic and self.connected.is_set():
            self.send(self.status_topic, wire.OFFLINE, retain=True)
        self.flush(timeout)
        self.client.disconnect()
        self.client.loop_stop()
