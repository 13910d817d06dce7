"""The networked DDNN against a real mosquitto on 127.0.0.1: every tier its own process.

Each test starts its own broker on a free port with a generated config and
stops it.  The runs are short (1,000-1,500 samples); the full 10,000-sample
equality and the load runs are ``benchmarks/ddnn_net.py``.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require_tools

import ebnn_codegen as E
from ebnn_codegen.cli import main
from ebnn_codegen.ddnn import datasets
from ebnn_codegen.ddnn.messages import encode_scores
from ebnn_codegen.ddnn.net import wire
from ebnn_codegen.ddnn.net.broker import Mosquitto, acl_text, users
from ebnn_codegen.ddnn.net.tiers import message_layout
from ebnn_codegen.ddnn.net.transport import MqttTransport, parse_broker
from ebnn_codegen.ddnn.runtime import StagedRuntime
from ebnn_codegen.errors import ToolError

MNIST = "examples/models/ddnn_mnist_tiles.pt"
MVMC = "examples/models/ddnn_mvmc_like.pt"
ROOT = Path(__file__).resolve().parents[1]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"  # /usr/sbin is not on every user's PATH


@pytest.fixture
def broker(tmp_path):
    require_tools(MOSQUITTO, "mosquitto_passwd", package="mosquitto")
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


def _offline(path: str, dataset: str, n: int, failed=()):
    model = E.load(path)
    data = datasets.load(dataset, "test", n=n)
    rt = StagedRuntime(model, devices="c")
    return rt.run(rt.device_stage(data), failed=failed)


def _watch(url: str, system: str, **creds) -> MqttTransport:
    t = MqttTransport(parse_broker(url, **creds), f"{system}-watch", clean_start=True, manual_ack=False)
    t.connect([f"ddnn/{system}/gateway/+/answer"])  # the final answers
    return t


@pytest.mark.slow
def test_system_same_answers_through_broker_and_gateway_restarts_two_clouds(broker, tmp_path):
    """1,000 mnist-tiles samples across the 16-bit wrap, two clouds sharing the jobs, the gateway restarted
    (SIGTERM, persistent session) and mosquitto stopped and started again mid-stream: every sample exactly one
    answer, equal to offline ``ddnn eval --devices c``."""
    n, system = 1000, "tA"
    out = tmp_path / "a.json"
    argv = ["ddnn", "system", MNIST, "--dataset", "mnist-tiles", "--broker", broker.url, "--json", str(out)]
    argv += ["--limit", str(n), "--clouds", "2", "--seq-start", "65000", "--restart", "gateway@250", "--system", system]
    argv += ["--deadline-ms", "10000", "--job-retry-ms", "60000", "--no-compare"]
    result: dict[str, int] = {}
    th = threading.Thread(target=lambda: result.setdefault("rc", main(argv)))
    th.start()
    watch = _watch(broker.url, system)
    seen = 0
    end = time.monotonic() + 600
    while seen < 600 and time.monotonic() < end and th.is_alive():
        seen += len(watch.receive(0.5))
    assert seen >= 600, "the stream did not get going"
    broker.stop()  # SIGTERM: mosquitto writes its persistence file; every client loses its connection
    time.sleep(1.0)
    broker.start()
    th.join(900)
    watch.close()
    assert not th.is_alive() and result["rc"] == 0
    rep = json.loads(out.read_text())
    ref = _offline(MNIST, "mnist-tiles", n)
    assert rep["samples"] == rep["answered"] == n and rep["answered_twice"] == 0
    np.testing.assert_array_equal(rep["answers"]["pred"], ref.pred)
    np.testing.assert_array_equal(rep["answers"]["exit"], ref.exit_index)
    assert all(p["returncode"] == 0 for p in rep["processes"].values()), rep["processes"]
    clouds = [t for t in rep["tiers"] if t["tier"] == "cloud"]
    assert len(clouds) == 2 and all(c["classified"] > 0 for c in clouds)
    # every cloud sample classified, some possibly twice: a job whose PUBACK the broker's stop cut off is
    # published again by the gateway's client, and the copy may reach the other cloud (QoS 1); the final
    # answer is still one per sample, the gateway's
    assert sum(c["classified"] for c in clouds) >= int(np.sum(ref.exit_index == 1))
    gateways = [t for t in rep["tiers"] if t["tier"] == "gateway"]
    assert len(gateways) == 2  # the first session and the restarted one
    assert rep["bytes_per_sample"]["to_aggregator"] >= 6 * 13  # QoS 1 redeliveries after the restarts count too
    assert rep["bytes_on_wire"]["per_sample"]["mqtt_overhead"] > 0


@pytest.mark.slow
def test_system_device_killed_gets_the_offline_failure_answers(broker, tmp_path):
    """mvmc-like, device 2 SIGKILLed after sample 1,000 of 1,500: samples from 1,000 on get offline ``--fail 2``'s
    answers, the earlier ones offline's (or, if in flight at the kill, either), and the run completes."""
    n, k = 1500, 1000
    out = tmp_path / "b.json"
    argv = ["ddnn", "system", MVMC, "--dataset", "mvmc-like", "--broker", broker.url, "--json", str(out)]
    argv += ["--fail", f"2@{k}", "--deadline-ms", "5000", "--clouds", "2", "--job-retry-ms", "60000"]
    assert main(argv) == 0
    rep = json.loads(out.read_text())
    assert rep["samples"] == rep["answered"] == n and rep["answered_twice"] == 0
    assert rep["offline"]["mismatches"] == 0 and rep["offline"]["compared"] == n
    full, failed = _offline(MVMC, "mvmc-like", n), _offline(MVMC, "mvmc-like", n, failed=(2,))
    pred, ex = np.array(rep["answers"]["pred"]), np.array(rep["answers"]["exit"])
    np.testing.assert_array_equal(pred[k:], failed.pred[k:])
    np.testing.assert_array_equal(ex[k:], failed.exit_index[k:])
    early = (pred[:k] == full.pred[:k]) & (ex[:k] == full.exit_index[:k])
    assert early.sum() >= k - rep["offline"]["in_flight_at_kill"]
    assert rep["latency_ms"]["after_failure"]["max"] < rep["deadline_ms"] + 10_000  # nothing waits for the dead device
    for key in ("overall_accuracy", "local_exit_fraction", "exit_accuracy", "device_accuracy", "bytes_per_sample"):
        assert key in rep
    assert rep["overall_accuracy"] == pytest.approx(float(np.mean(pred == datasets.load("mvmc-like", "test").y)))
    clouds = [t for t in rep["tiers"] if t["tier"] == "cloud"]  # scale-out: two clouds split the jobs
    assert len(clouds) == 2 and all(c["classified"] > 0 for c in clouds)
    assert sum(c["classified"] for c in clouds) == int(np.sum(ex == 1))  # each cloud sample classified once


def _creds(tmp_path: Path, user: str) -> dict[str, str]:
    f = tmp_path / f"{user}.pw"
    f.write_text(f"pw-{user}\n")
    return {"username": user, "password_file": str(f)}


@pytest.mark.slow
def test_broker_acl_and_hostile_publisher(tmp_path):
    """Per-tier credentials and an ACL at mosquitto; a gateway process rejects and counts hostile payloads from an
    authorised device and keeps answering."""
    require_tools(MOSQUITTO, "mosquitto_passwd", package="mosquitto")
    system = "tC"
    model = E.load(MVMC)
    lay = message_layout(model)
    passwords = {u: f"pw-{u}" for u in users(6)}
    b = Mosquitto(tmp_path / "broker", credentials=passwords, acl=acl_text(system, 6)).start()
    try:
        # refused: no credentials, a wrong password
        with pytest.raises(ToolError, match="refused"):
            MqttTransport(parse_broker(b.url), "anon").connect([], timeout=10)
        bad = tmp_path / "bad.pw"
        bad.write_text("nope\n")
        with pytest.raises(ToolError, match="refused"):
            MqttTransport(parse_broker(b.url, username="gateway", password_file=str(bad)), "x").connect([], timeout=10)
        # a device may publish only its own topics
        spy = MqttTransport(
            parse_broker(b.url, **_creds(tmp_path, "gateway")), "spy", clean_start=True, manual_ack=False
        )
        spy.connect([f"ddnn/{system}/device/+/scores"])
        dev = {
            d: MqttTransport(parse_broker(b.url, **_creds(tmp_path, f"device-{d}")), f"d{d}", clean_start=True)
            for d in range(6)
        }
        for t in dev.values():
            t.connect([])
        dev[1].send(f"ddnn/{system}/device/2/scores", encode_scores(lay, 2, 1, np.array([1, 2, 3])))
        dev[1].send(f"ddnn/{system}/device/1/scores", encode_scores(lay, 1, 1, np.array([1, 2, 3])))
        time.sleep(1.0)
        got = spy.receive(2.0)
        assert [t for t, _, _ in got] == [f"ddnn/{system}/device/1/scores"]
        spy.close()

        # a gateway process with its own credentials
        sink = MqttTransport(
            parse_broker(b.url, **_creds(tmp_path, "source")), "sink", clean_start=True, manual_ack=False
        )
        sink.connect([f"ddnn/{system}/gateway/0/answer", f"ddnn/{system}/gateway/0/status"])
        stats = tmp_path / "gw.json"
        cmd = [sys.executable, "-m", "ebnn_codegen.cli", "ddnn", "serve", "gateway", MVMC, "--broker", b.url]
        cmd += ["--system", system, "--stats-json", str(stats), "--clean-start", "--deadline-ms", "60000"]
        c = _creds(tmp_path, "gateway")
        cmd += ["--username", c["username"], "--password-file", c["password_file"]]
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        try:
            end = time.monotonic() + 300
            while time.monotonic() < end:
                msgs = sink.receive(0.5)
                if any(p == wire.ONLINE for _, p, _ in msgs):
                    break
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            t0 = f"ddnn/{system}/device/0/scores"

            def sample(seq: int) -> int:
                for d in range(6):
                    dev[d].send(
                        f"ddnn/{system}/device/{d}/scores", encode_scores(lay, d, seq, np.array([90, -90, -90]))
                    )
                end = time.monotonic() + 60
                while time.monotonic() < end:
                    for _t, p, _ in sink.receive(0.5):
                        if p != wire.ONLINE and p != wire.OFFLINE:
                            return wire.decode_answer(p, 3, 2, 6)[0]
                raise AssertionError(f"no answer for sample {seq}")

            assert sample(7) == 7
            ok = encode_scores(lay, 0, 8, np.array([1, 2, 3]))
            hostile = {
                "type": [b"\xc0" + ok[1:]],
                "length": [ok + bytes(200_000), ok[:-1], b""],
                "value": [ok[:3] + b"\x80\x01\x01"],
                "topic": [encode_scores(lay, 3, 8, np.array([1, 2, 3]))],
                "duplicate": [encode_scores(lay, 0, 7, np.array([1, 2, 3]))],
                "sequence": [encode_scores(lay, 0, 7 + 30_000, np.array([1, 2, 3]))],
            }
            for payloads in hostile.values():
                for p in payloads:
                    dev[0].send(t0, p)
            assert sample(9) == 9  # still working
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        rep = json.loads(stats.read_text())
        assert rep["rejected"] == {reason: len(p) for reason, p in hostile.items()}
        assert rep["outcomes"]["local"] == 2
        for t in dev.values():
            t.close()
        sink.close()
    finally:
        b.stop()
