"""The networked DDNN's logic without a broker: wire format, sequence wrap, gateway deadline, fuzz, in-memory run."""

from __future__ import annotations

import time

import numpy as np
import pytest

import ebnn_codegen as E
from ebnn_codegen.cli import main
from ebnn_codegen.ddnn import datasets
from ebnn_codegen.ddnn.messages import MessageError, encode_features, encode_scores
from ebnn_codegen.ddnn.net import wire
from ebnn_codegen.ddnn.net.memory import run_in_memory
from ebnn_codegen.ddnn.net.tiers import CloudTier, GatewayTier, PythonDecision, message_layout
from ebnn_codegen.ddnn.net.transport import parse_broker
from ebnn_codegen.ddnn.runtime import StagedRuntime

MVMC = "examples/models/ddnn_mvmc_like.pt"
SYS = "t"


@pytest.fixture(scope="module")
def mvmc():
    return E.load(MVMC)


class Out:
    """Collects what a tier sends and acknowledges."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.acked: list[object] = []

    def send(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, payload))

    def ack(self, token: object) -> None:
        self.acked.append(token)

    def kinds(self) -> list[str]:
        return [t.rsplit("/", 1)[1] for t, _ in self.sent]


# --------------------------------------------------------------------------- wire


def test_sequence_numbers_unwrap_past_65536():
    rng = np.random.default_rng(0)
    u = wire.SeqUnwrap(max_ahead=256)
    true = np.arange(200_000)
    true = true + rng.integers(-100, 100, len(true))  # out of order by up to 100 samples
    true = np.maximum(true, 0)
    got = [u.unwrap(int(t) & 0xFFFF) for t in true]
    assert got == true.tolist()
    with pytest.raises(MessageError) as e:
        u.unwrap((u.top + 1000) & 0xFFFF)  # type: ignore[operator]
    assert e.value.reason == "sequence"


def test_wire_payloads_round_trip_and_reject(mvmc):
    lay = message_layout(mvmc)
    assert wire.decode_view(wire.encode_view(70_000, b"abc"), 3) == (70_000 & 0xFFFF, b"abc")
    assert wire.decode_request(wire.encode_request(5, 0b101), 6) == (5, 0b101)
    assert wire.decode_answer(wire.encode_answer(65_537, 2, 1, 0b11), 3, 2, 6) == (1, 2, 1, 0b11)
    act = np.where(np.random.default_rng(1).random((4, 8, 8)) > 0.5, 1, -1)
    msgs = {d: encode_features(lay, d, 9, act) for d in (0, 3)}
    assert wire.decode_job(wire.encode_job(9, msgs), lay, 6) == (9, msgs)
    bad = {
        "length": [lambda: wire.decode_view(b"\x00", 3), lambda: wire.decode_request(b"\x00" * 9, 6)],
        "sender": [
            lambda: wire.decode_request(wire.encode_request(1, 1 << 6), 6),
            lambda: wire.decode_request(wire.encode_request(1, 0), 6),
        ],
        "value": [lambda: wire.decode_answer(wire.encode_answer(1, 3, 0, 1), 3, 2, 6)],
        "sequence": [
            lambda: (
                wire.decode_job(wire.encode_job(8, msgs), lay, 6)
                if False
                else wire.decode_job(wire.encode_request(8, 0b1001) + msgs[0] + msgs[3], lay, 6)
            )
        ],
        "topic": [lambda: wire.parse_topic("ddnn/t/device/x/scores"), lambda: wire.parse_topic("a/b")],
        "type": [lambda: wire.decode_view("text", 3)],
    }
    for reason, calls in bad.items():
        for call in calls:
            with pytest.raises(MessageError) as e:
                call()
            assert e.value.reason == reason
    # a job whose slot holds another device's message
    swapped = wire.encode_request(9, 0b1001) + msgs[3] + msgs[0]
    with pytest.raises(MessageError) as e:
        wire.decode_job(swapped, lay, 6)
    assert e.value.reason == "sender"


def test_broker_url():
    o = parse_broker("mqtt://127.0.0.1:1884")
    assert (o.host, o.port, o.tls) == ("127.0.0.1", 1884, False)
    assert parse_broker("mqtts://broker.example").port == 8883
    for url in ("http://x:1", "mqtt://", "mqtt://u:p@h:1", "mqtt://h:99999"):
        with pytest.raises(E.CodegenError):
            parse_broker(url)


# --------------------------------------------------------------------------- gateway


def _scores(lay, d, seq, q):
    return encode_scores(lay, d, seq, np.asarray(q))


def test_gateway_deadline_treats_a_silent_device_as_failed(mvmc):
    lay = message_layout(mvmc)
    out = Out()
    gw = GatewayTier(mvmc, SYS, out.send, out.ack, deadline=0.5, retry=1e9)
    py = PythonDecision(mvmc, mvmc.config["thresholds"]["local"])
    rng = np.random.default_rng(2)
    for s in range(40):
        q = rng.integers(-60, 60, (6, 3))
        silent = int(rng.integers(0, 6))
        for d in range(6):
            if d != silent:
                gw.handle([(f"ddnn/{SYS}/device/{d}/scores", _scores(lay, d, s, q[d]), (s, d))], now=10.0 * s)
        assert not out.sent or out.sent[-1][0].endswith(("answer", "job"))  # nothing decided for this sample yet
        n_before = len(out.sent)
        gw.tick(10.0 * s + 0.49)
        assert len(out.sent) == n_before
        gw.tick(10.0 * s + 0.5)
        topic, payload = out.sent[-1]
        present = np.ones(6, bool)
        present[silent] = False
        q[silent] = 0
        pred, exits = py.decide(q, present)
        if exits:
            assert topic.endswith("gateway/0/answer")
            assert wire.decode_answer(payload, 3, 2, 6) == (
                s,
                pred,
                0,
                wire.mask_of(d for d in range(6) if d != silent),
            )
        else:
            assert topic.endswith("gateway/0/request")
            assert wire.decode_request(payload, 6) == (s, wire.mask_of(d for d in range(6) if d != silent))
            gw.tick(10.0 * s + 1.0)  # no features arrive either: an empty job after the deadline
            assert out.sent[-1][0].endswith("job") and wire.decode_job(out.sent[-1][1], lay, 6) == (s, {})
    assert gw.outcomes["deadline"] >= 40 and all(s.phase == "cloud" for s in gw.pending.values())
    gw.pending.clear()
    # a device offline (its last will) for a deadline is not waited for; a reconnection of ours forgets that
    gw.handle([(f"ddnn/{SYS}/device/4/status", wire.OFFLINE, None)], now=1000.0)
    for seq, now in ((100, 1000.2), (101, 1000.5)):
        for d in (0, 1, 2, 3, 5):
            gw.handle([(f"ddnn/{SYS}/device/{d}/scores", _scores(lay, d, seq, [50, -50, -50]), None)], now=now)
    assert set(gw.pending) == {100}  # 100 began before device 4 had been offline for a deadline; 101 did not wait
    assert out.sent[-1][0].endswith("answer") and wire.decode_answer(out.sent[-1][1], 3, 2, 6)[0] == 101
    gw.tick(1000.7)
    assert not gw.pending and wire.decode_answer(out.sent[-1][1], 3, 2, 6)[0] == 100
    gw.reconnected(1001.0)
    for d in (0, 1, 2, 3, 5):
        gw.handle([(f"ddnn/{SYS}/device/{d}/scores", _scores(lay, d, 102, [50, -50, -50]), None)], now=1001.0)
    assert set(gw.pending) == {102}


def _valid_sample(gw, out, lay, seq, now=0.0):
    """All six devices send confident scores: the gateway must answer locally."""
    for d in range(6):
        gw.handle([(f"ddnn/{SYS}/device/{d}/scores", _scores(lay, d, seq, [90, -90, -90]), ("ok", seq, d))], now)
    topic, payload = out.sent[-1]
    assert topic == f"ddnn/{SYS}/gateway/0/answer" and wire.decode_answer(payload, 3, 2, 6)[:3] == (seq & 0xFFFF, 0, 0)


def test_gateway_rejects_hostile_messages_and_keeps_working(mvmc):
    lay = message_layout(mvmc)
    out = Out()
    gw = GatewayTier(mvmc, SYS, out.send, out.ack, max_ahead=100)
    _valid_sample(gw, out, lay, 1)
    t = f"ddnn/{SYS}/device/0/scores"
    ok = _scores(lay, 0, 2, [1, 2, 3])
    hostile = [
        (t, b"\xff" + ok[1:], "type"),  # type 3
        (t, ok + b"\x00" * 100_000, "length"),  # oversized
        (t, ok[:-1], "length"),
        (t, ok[:3] + b"\x80\x00\x00", "value"),  # reserved -128
        (t, _scores(lay, 1, 2, [1, 2, 3]), "topic"),  # device 0's topic, sender 1 in the header
        (t, _scores(lay, 0, 1, [1, 2, 3]), "duplicate"),  # sample 1 again
        (t, _scores(lay, 0, 500, [1, 2, 3]), "sequence"),  # far ahead of the newest sample
        (f"ddnn/{SYS}/device/0/features", encode_features(lay, 0, 3, -np.ones((4, 8, 8))), "unexpected"),
        (f"ddnn/{SYS}/device/9/scores", ok, "topic"),
        ("ddnn/other system/device/0/scores", ok, "topic"),
        (t, encode_features(lay, 0, 2, -np.ones((4, 8, 8))), "type"),
    ]
    for topic, payload, reason in hostile:
        before = dict(gw.counters.rejected)
        gw.handle([(topic, payload, "h")], 0.0)
        assert gw.counters.rejected.get(reason, 0) == before.get(reason, 0) + 1, reason
    # a late device after the local decision of sample 3 (only five reported, deadline passed)
    for d in range(5):
        gw.handle([(f"ddnn/{SYS}/device/{d}/scores", _scores(lay, d, 3, [90, -90, -90]), None)], 0.0)
    gw.tick(5.0)
    gw.handle([(f"ddnn/{SYS}/device/5/scores", _scores(lay, 5, 3, [90, -90, -90]), None)], 5.0)
    assert gw.counters.rejected["late"] == 1
    _valid_sample(gw, out, lay, 4, now=5.0)
    assert out.acked.count("h") == len(hostile)  # rejected messages are consumed


def test_fuzz_receiving_tiers(mvmc):
    """Random topics and payloads for a bounded time: only counted rejections, and the tiers keep working."""
    lay = message_layout(mvmc)
    rng = np.random.default_rng(3)
    out = Out()
    gw = GatewayTier(mvmc, SYS, out.send, out.ack)
    cout = Out()
    cloud = CloudTier(mvmc, SYS, cout.send, cout.ack)
    topics = [f"ddnn/{SYS}/device/{d}/{k}" for d in (0, 5, 7) for k in ("scores", "features", "status")]
    topics += [f"ddnn/{SYS}/gateway/0/job", "ddnn/x", f"ddnn/{SYS}/cloud/0/answer"]
    valid = [_scores(lay, 2, 7, [1, 2, 3]), encode_features(lay, 1, 7, np.ones((4, 8, 8))), wire.encode_job(7, {})]
    end = time.monotonic() + 2.0
    count = 0
    while time.monotonic() < end:
        base = valid[int(rng.integers(len(valid)))]
        r = rng.random()
        if r < 0.3:
            payload = rng.bytes(int(rng.integers(0, 64)))
        elif r < 0.6:
            b = bytearray(base)
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(len(b)))] = int(rng.integers(256))
            payload = bytes(b)
        else:
            payload = base[: int(rng.integers(0, len(base) + 1))] + rng.bytes(int(rng.integers(0, 3)))
        topic = topics[int(rng.integers(len(topics)))]
        gw.handle([(topic, payload, None)], 0.0)
        cloud.handle([(topic, payload, None)], 0.0)
        count += 1
    assert count > 500
    assert gw.counters.received == count and cloud.counters.received == count
    assert set(gw.counters.rejected) <= set(wire.REASONS) and set(cloud.counters.rejected) <= set(wire.REASONS)
    gw.tick(1e9)  # whatever the fuzz started is decided
    out.sent.clear()
    _valid_sample(gw, out, lay, 20_000, now=1e9)


# --------------------------------------------------------------------------- in memory


def test_tiers_over_memory_equal_the_staged_runtime(mvmc):
    """The network's tier objects over an in-memory transport = the offline staged runtime, across the wrap."""
    data = datasets.load("mvmc-like", "test", n=300)
    rt = StagedRuntime(mvmc, devices="c")
    stage = rt.device_stage(data)
    for failed in [(), (2,)]:
        ref = rt.run(stage, failed=failed)
        got = run_in_memory(mvmc, data, failed=failed, clouds=2, seq_start=65_400, runtime=rt)
        assert got["answered_twice"] == 0
        np.testing.assert_array_equal(got["pred"], ref.pred)
        np.testing.assert_array_equal(got["exit_index"], ref.exit_index)
        clouds = [s for s in got["stats"] if s["tier"] == "cloud"]
        assert sum(c["classified"] for c in clouds) == int(np.sum(ref.exit_index == 1))
        assert all(c["classified"] > 0 for c in clouds)


# --------------------------------------------------------------------------- CLI


def test_cli_user_errors(capsys, tmp_path):
    cases = [
        ["ddnn", "serve", "device", MVMC, "--broker", "http://h:1", "--device", "0"],
        ["ddnn", "serve", "device", MVMC, "--broker", "mqtt://127.0.0.1:1"],
        ["ddnn", "serve", "gateway", MVMC, "--broker", "mqtt://127.0.0.1:1", "--deadline-ms", "0"],
        ["ddnn", "serve", "cloud", MVMC, "--broker", "mqtt://127.0.0.1:1", "--password-file", str(tmp_path / "none")],
        ["ddnn", "serve", "cloud", MVMC, "--broker", "mqtt://127.0.0.1:1", "--system", "a/b"],
        [
            "ddnn",
            "system",
            MVMC,
            "--dataset",
            "mvmc-like",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--json",
            str(tmp_path / "o.json"),
            "--fail",
            "9@3",
        ],
        [
            "ddnn",
            "system",
            MVMC,
            "--dataset",
            "mvmc-like",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--json",
            str(tmp_path / "o.json"),
            "--fail",
            "x",
        ],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) <= 2, (argv, err)
    assert not (tmp_path / "o.json").exists()


def test_serve_device_port_refuses_a_missing_port_before_the_broker(capsys):
    """--port drives a board through the serial agent (tests/test_boards.py); an absent port
    is a user mistake found before connecting to the broker."""
    rc = main(
        ["ddnn", "serve", "device", MVMC, "--broker", "mqtt://127.0.0.1:1", "--device", "0", "--port", "/dev/ttyACM9"]
    )
    assert rc == 2
    assert "error: --port /dev/ttyACM9: no such serial port" in capsys.readouterr().err


def test_serve_unreachable_broker_is_an_external_failure(capsys):
    from ebnn_codegen.ddnn.net.broker import free_port

    assert main(["ddnn", "serve", "cloud", MVMC, "--broker", f"mqtt://127.0.0.1:{free_port()}"]) == 3
    assert "error: cannot reach the MQTT broker" in capsys.readouterr().err


def test_a_lost_job_is_published_again_and_answered_once(mvmc):
    lay = message_layout(mvmc)
    out, cout = Out(), Out()
    gw = GatewayTier(mvmc, SYS, out.send, out.ack, retry=3.0)
    cloud = CloudTier(mvmc, SYS, cout.send, cout.ack)
    for d in range(6):  # undecided scores: the gateway asks for features
        gw.handle([(f"ddnn/{SYS}/device/{d}/scores", _scores(lay, d, 5, [0, 0, 0]), ("s", d))], 0.0)
    assert out.kinds() == ["request"]
    for d in range(6):
        act = np.where(np.random.default_rng(d).random((4, 8, 8)) > 0.5, 1, -1)
        gw.handle([(f"ddnn/{SYS}/device/{d}/features", encode_features(lay, d, 5, act), ("f", d))], 0.1)
    assert out.kinds() == ["request", "job"] and not out.acked  # open until a cloud answers
    gw.tick(3.0)
    assert out.kinds() == ["request", "job"]
    gw.tick(3.2)
    assert out.kinds() == ["request", "job", "job"] and out.sent[1] == out.sent[2] and gw.outcomes["job_retries"] == 1
    for topic, payload in out.sent[1:]:  # both copies reach the cloud: classified once, answered twice alike
        cloud.handle([(topic, payload, "j")], 3.3)
    assert cloud.classified == 1 and cloud.counters.rejected == {"duplicate": 1}
    assert len(cout.sent) == 2 and cout.sent[0] == cout.sent[1]
    gw.handle([(cout.sent[0][0], cout.sent[0][1], "a")], 3.4)
    assert not gw.pending and len(out.acked) == 13  # 6 scores, 6 features, the answer
    assert out.kinds() == ["request", "job", "job", "answer"]  # the gateway publishes the final answer
    assert out.sent[-1][0] == f"ddnn/{SYS}/gateway/0/answer" and out.sent[-1][1] == cout.sent[0][1]
    gw.handle([(cout.sent[1][0], cout.sent[1][1], "a")], 3.5)  # the second answer changes nothing
    assert not gw.pending and out.kinds() == ["request", "job", "job", "answer"]
    assert gw.outcomes["cloud_answers_dropped"] == 1
