"""Boards: the serial protocol (unit tests with a fake port), the board table, and the
whole path through the virtual Uno, from the CLI as a user types it:

flash (avrdude writes and reads back through optiboot) -> verify --port on 100 MNIST
test images, every hidden bit -> run --port -> bench --port against simavr's cycles ->
re-flash another model (INFO changes, verify refuses the board) -> the agent resynchronises
after noise, half-sent frames, bad CRCs and lengths -> failure cases (wrong
port, nothing answering, bootloader silent, garbage on the line): one `error:` line,
the right exit code, never a hang.
"""

from __future__ import annotations

import json
import os
import random
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import random_model, require_tools, strict_tools

import ebnn_codegen as E
from ebnn_codegen.boards import firmware, get, names, table
from ebnn_codegen.boards import serial as bs
from ebnn_codegen.cli import main
from ebnn_codegen.errors import CodegenError

ROOT = Path(__file__).resolve().parents[1]
MNIST_UNO = str(ROOT / "examples" / "models" / "mnist_uno.pt")


def small_config(name: str, channels: int = 4) -> dict:
    """A second model for the Uno: 28x28 input, small enough for 2 KB of RAM with the agent."""
    return {
        "name": name,
        "input": [1, 28, 28],
        "layers": [
            {
                "type": "conv",
                "out_channels": channels,
                "kernel": 3,
                "padding": 1,
                "pool": {"kernel": 3, "stride": 2, "padding": 1},
            },
            {"type": "blinear", "out_features": 16},
            {"type": "exit", "classes": 10},
        ],
    }


# -- the protocol, with a fake port ---------------------------------------------------


class FakePort:
    """A port whose replies are scripted: ``answer(frame_bytes) -> bytes`` per write."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.buf = bytearray()
        self.timeout: float | None = 0.1
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        self.buf += self.answer(bytes(data))
        return len(data)

    def read(self, size: int = 1) -> bytes:
        if not self.buf:
            time.sleep(min(self.timeout or 0.0, 0.01))
            return b""
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out

    def reset_input_buffer(self) -> None:
        self.buf.clear()

    def close(self) -> None:
        pass


def _parse(data: bytes) -> tuple[int, int, bytes]:
    assert data[:2] == bs.SYNC
    ftype, seq, length = struct.unpack_from("<BBH", data, 2)
    payload = data[6 : 6 + length]
    assert struct.unpack_from("<H", data, 6 + length)[0] == bs.crc16(data[2 : 6 + length])
    return ftype, seq, payload


def test_crc16_is_ccitt_false() -> None:
    assert bs.crc16(b"123456789") == 0x29B1
    assert bs.crc16(b"") == 0xFFFF


def test_frame_layout_matches_the_documented_example() -> None:
    # docs/boards.md, "A worked example": INFO request, seq 1
    assert bs.frame(bs.INFO, 1).hex(" ") == "eb 4e 01 01 00 00 " + " ".join(
        f"{b:02x}" for b in struct.pack("<H", bs.crc16(bytes([1, 1, 0, 0])))
    )
    assert bs.frame(bs.LAYER, 7, b"\x02")[2:6] == bytes([3, 7, 1, 0])


def test_link_skips_noise_bad_crc_and_stale_replies() -> None:
    def answer(req: bytes) -> bytes:
        _, seq, _ = _parse(req)
        bad = bytearray(bs.frame(bs.INFER | bs.REPLY, seq, b"x" * 10))
        bad[-1] ^= 0xFF  # damaged CRC
        stale = bs.frame(bs.LAYER | bs.REPLY, (seq - 1) & 0xFF, b"\x00old")
        good = bs.frame(bs.LAYER | bs.REPLY, seq, b"\x01abc")
        return b"\x00\xeb\xeb garbage \xeb" + bytes(bad) + stale + good[:3] + good[3:]

    link = bs.Link(FakePort(answer), "fake", timeout_s=0.5, retries=0)
    assert link.layer(1) == b"abc"
    assert link.stats.dropped_frames == 2 and link.stats.skipped_bytes > 5 and link.stats.retries == 0


def test_link_retries_after_a_crc_error_reply_then_gives_up_clearly() -> None:
    calls = []

    def answer(req: bytes) -> bytes:
        _, seq, _ = _parse(req)
        calls.append(seq)
        if len(calls) == 1:
            return bs.frame(bs.ERROR, seq, bytes([bs.ERR_CRC, bs.INFO]))
        return bs.frame(bs.INFO | bs.REPLY, seq, bs.encode_info(_info()))

    link = bs.Link(FakePort(answer), "fake", timeout_s=0.5, retries=2)
    assert link.info() == _info() and link.stats.retries == 1 and len(calls) == 2

    silent = bs.Link(FakePort(lambda req: b"Hello from a sketch\r\n"), "/dev/fake", timeout_s=0.05, retries=2)
    t0 = time.monotonic()
    with pytest.raises(bs.BoardError, match=r"/dev/fake: no valid answer .* after 3 tries.*Hello from a sketch"):
        silent.info()
    assert time.monotonic() - t0 < 5


def test_link_refusal_is_not_retried() -> None:
    link = bs.Link(FakePort(lambda req: bs.frame(bs.ERROR, _parse(req)[1], bytes([bs.ERR_NO_TRACE, bs.LAYER]))))
    with pytest.raises(bs.BoardError, match="no hidden-block outputs"):
        link.layer(0)
    assert link.stats.retries == 0


def _info(**kw) -> bs.Info:
    base = dict(
        model_hash=bytes(range(8)),
        input_shape=(1, 28, 28),
        num_classes=10,
        score_scale_log2=26,
        kernels="fast",
        block_bytes=(196, 98, 16),
        f_cpu=16_000_000,
        timer_hz=250_000,
        baud=115200,
        name="mnist_uno",
        chip="ATmega328P",
    )
    return bs.Info(**(base | kw))


def test_info_round_trip_and_malformed_payloads() -> None:
    for info in (_info(), _info(score_scale_log2=-3, kernels="reference", block_bytes=(1,), name="m")):
        assert bs.decode_info(bs.encode_info(info)) == info
    data = bs.encode_info(_info())
    for bad in (data[:-1], data + b"\0", b"", bytes([9]) + data[1:]):
        with pytest.raises(bs.BoardError):
            bs.decode_info(bad)


def test_board_table_is_data() -> None:
    assert {"uno", "nano", "mega2560"} <= set(names())
    uno = get("uno")
    assert (uno.chip, uno.f_cpu, uno.programmer, uno.upload_baud) == ("ATmega328P", 16_000_000, "arduino", 115200)
    assert get("mega2560").programmer == "wiring"
    for b in table().values():
        assert b.app_flash_bytes <= b.flash_bytes and b.flash_tool in ("avrdude", "esptool", "none")
    with pytest.raises(CodegenError, match="unknown board 'due'"):
        get("due")


def test_uart_setting_and_model_hash(tmp_path: Path, tiny_config: dict) -> None:
    assert firmware.uart_setting(16_000_000, 115200) == (16, 1, 117647)
    assert firmware.uart_setting(16_000_000, 1_000_000) == (1, 1, 1_000_000)
    a = E.compile(random_model(tiny_config, seed=1))
    b = E.compile(random_model(tiny_config, seed=2))
    E.save(random_model(tiny_config, seed=1), tmp_path / "a.pt")
    assert firmware.model_hash(a) == firmware.model_hash(E.compile(str(tmp_path / "a.pt")))
    assert firmware.model_hash(a) != firmware.model_hash(b) and len(firmware.model_hash(a)) == 8


# -- the virtual Uno --------------------------------------------------------------------


def _need_board_tools() -> None:
    require_tools(
        "avr-gcc",
        "avr-objcopy",
        "avrdude",
        "pkg-config",
        "cc",
        package="gcc-avr avr-libc avrdude simavr libsimavr-dev libelf-dev",
    )
    if subprocess.run(["pkg-config", "--exists", "simavr"]).returncode != 0:
        msg = "libsimavr not found: install libsimavr-dev libelf-dev"
        pytest.fail(msg) if strict_tools() else pytest.skip(msg)


class Simulator:
    """`ebnn-gen board simulate --board BOARD` in a subprocess, as a user starts it."""

    def __init__(self, board: str = "uno", *extra: str) -> None:
        cmd = [sys.executable, "-m", "ebnn_codegen.cli", "board", "simulate", "--board", board, *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready, _, _ = select.select([self.proc.stdout], [], [], 180)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("/dev/"):
            self.stop()
            raise AssertionError(f"the virtual Uno did not start: {line!r} {self.proc.stderr.read().decode()[-2000:]}")
        self.port = line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def vuno():
    _need_board_tools()
    sim = Simulator()
    yield sim
    sim.stop()
    assert sim.proc.returncode == 0  # SIGTERM: a clean stop


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["-q", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error: "), err
    assert all(ln.startswith(("error: ", "hint: ")) for ln in lines), err
    return lines[0]


N_VERIFY = 100  # MNIST test images verified on the virtual Uno (about 4 per second at 115 200 baud)


def _mnist(n: int) -> np.ndarray:
    from ebnn_codegen.data import DataError, mnist

    try:
        return mnist.load("mnist", "test", n=n)[0]
    except DataError as exc:
        if strict_tools():
            pytest.fail(f"MNIST not available: {exc}")
        pytest.skip(f"MNIST not available: {exc}")


@pytest.mark.emulator
@pytest.mark.slow
@pytest.mark.mnist
def test_virtual_uno_flash_verify_bench_reflash(vuno, tmp_path: Path, capsys) -> None:
    port = vuno.port
    x = _mnist(N_VERIFY)
    np.save(tmp_path / "x.npy", x)

    # flash: fit check, firmware, avrdude through optiboot (write + read back), INFO check
    rc, out, err = _cli(capsys, "flash", MNIST_UNO, "--board", "uno", "--port", port, "--json")
    assert rc == 0, err
    flashed = json.loads(out)
    assert flashed["info"]["model"] == "mnist_uno" and flashed["info"]["chip"] == "ATmega328P"
    assert flashed["image_flash_bytes"] <= 31744 and flashed["sram_needed_bytes"] <= 2048
    assert 1.0 < flashed["upload_s"] < 120

    # verify --port: N_VERIFY MNIST test images, every hidden bit and every score
    rc, out, err = _cli(
        capsys,
        "verify",
        MNIST_UNO,
        "--port",
        port,
        "--input",
        str(tmp_path / "x.npy"),
        "--json",
        str(tmp_path / "v.json"),
    )
    assert rc == 0, out + err
    assert (
        out.startswith(f"PASS: {N_VERIFY} samples on board on")
        and "board == host build (bits, scores, predictions): yes" in out
    )
    rep = json.loads((tmp_path / "v.json").read_text())
    assert rep["bit_mismatches"] == 0 and rep["bits_compared"] == N_VERIFY * (8 * 14 * 14 + 16 * 7 * 7 + 128)
    assert rep["host_exact"] and rep["reference_exact"]  # (retries, if the host was too busy, are fine)

    # run --port: the same .npz keys and values as run --target host
    np.save(tmp_path / "x3.npy", x[:3])
    assert (
        _cli(
            capsys,
            "run",
            MNIST_UNO,
            "--port",
            port,
            "--input",
            str(tmp_path / "x3.npy"),
            "--output",
            str(tmp_path / "b.npz"),
        )[0]
        == 0
    )
    assert (
        _cli(capsys, "run", MNIST_UNO, "--input", str(tmp_path / "x3.npy"), "--output", str(tmp_path / "h.npz"))[0] == 0
    )
    board_out, host_out = np.load(tmp_path / "b.npz"), np.load(tmp_path / "h.npz")
    assert (
        sorted(board_out.files)
        == sorted(host_out.files)
        == sorted(["pred", "scores", "score_scale", "layer_0", "layer_1", "layer_2"])
    )
    for key in host_out.files:
        np.testing.assert_array_equal(board_out[key], host_out[key])
        assert board_out[key].dtype == host_out[key].dtype

    # bench --port: the board's timer against simavr's exact cycle count of the same input
    rc, out, err = _cli(capsys, "bench", MNIST_UNO, "--port", port, "--json")
    assert rc == 0, err
    bench = json.loads(out)
    assert bench["measured_on"] == "board" and bench["emulator"]["target"] == "avr"
    assert abs(bench["cycles"] - bench["emulator"]["cycles"]) <= bench["timer_resolution_cycles"] == 64
    # one run is within one tick of another (the prescaler's phase), plus one more when Timer1's
    # overflow interrupt (every 65,536 ticks; its handler takes under one 64-cycle tick) lands inside it
    assert bench["ticks_max"] - bench["ticks_min"] <= 2

    # re-flash another model: INFO changes, and verify refuses the board for mnist_uno
    E.save(random_model(small_config("other"), seed=3), tmp_path / "other.pt")
    rc, out, err = _cli(capsys, "flash", str(tmp_path / "other.pt"), "--board", "uno", "--port", port, "--json")
    assert rc == 0, err
    second = json.loads(out)
    assert second["info"]["model"] == "other" and second["info"]["model_hash"] != flashed["info"]["model_hash"]
    rc, out, err = _cli(capsys, "verify", MNIST_UNO, "--port", port, "--samples", "2")
    assert rc == 2 and out == ""
    line = _one_error_line(err)
    assert f"runs model 'other' (hash {second['model_hash']}), not 'mnist_uno' (hash {flashed['model_hash']})" in line
    rc, out, err = _cli(capsys, "verify", str(tmp_path / "other.pt"), "--port", port, "--samples", "5")
    assert rc == 0, out + err
    _agent_resynchronises(port, str(tmp_path / "other.pt"), "other")


def _agent_resynchronises(port: str, ckpt: str, name: str) -> None:
    """The agent itself (not the host's retries): garbage, a half-sent frame, a bad CRC and
    a wrong length, each answered or dropped, and the next request answered."""
    graph = E.compile(ckpt)
    with bs.Link.open(port, 115200, boot_wait_s=2.0, retries=5) as link:
        ser = link.ser
        # the board is up (opening the port reset it into the bootloader; an emulator behind the
        # wall clock may still be there after boot_wait_s): from here on the agent gets no retries
        assert link.info().name == name
        link.retries = 0

        def reply(deadline_s: float = 1.0):
            return link.read_frame(time.monotonic() + deadline_s)

        ser.write(bytes(random.Random(5).randrange(256) for _ in range(300)).replace(b"\xeb", b"\x00"))
        ser.write(bs.frame(bs.INFER, 9, b"\x01" + bytes(graph.input_bytes))[:40])  # half a frame, then silence
        time.sleep(0.2)
        assert link.info().name == name
        damaged = bytearray(bs.frame(bs.INFO, 10))
        damaged[-1] ^= 1
        ser.write(bytes(damaged))
        assert reply() == (bs.ERROR, 10, bytes([bs.ERR_CRC, bs.INFO]))
        ser.write(bs.frame(bs.INFER, 11, b"\x01\x02"))
        assert reply() == (bs.ERROR, 11, bytes([bs.ERR_LENGTH, bs.INFER]))
        ser.write(bs.frame(0x33, 12))
        assert reply() == (bs.ERROR, 12, bytes([bs.ERR_TYPE, 0x33]))
        ser.write(bs.frame(bs.LAYER, 13, b"\x00"))
        assert reply() == (bs.ERROR, 13, bytes([bs.ERR_NO_TRACE, bs.LAYER]))
        x = np.arange(graph.input_bytes, dtype=np.uint8).reshape(1, *graph.input_shape)
        pred, scores, _ = link.infer(x.tobytes(), trace=True, extra_s=1.0)
        ref = E.run(graph, x)
        assert pred == ref.pred[0] and scores == list(ref.scores[0])
        ser.write(bs.frame(bs.LAYER, 14, bytes([len(graph.hidden)])))
        assert reply() == (bs.ERROR, 14, bytes([bs.ERR_BLOCK, bs.LAYER]))


# -- failure cases: one error line, the right exit code, never a hang ---------------------


def _silent_pty():
    master, slave = os.openpty()
    return master, slave, os.ttyname(slave)


@pytest.mark.emulator
def test_wrong_port_is_a_user_mistake(capsys) -> None:
    for argv in (
        ["flash", MNIST_UNO, "--board", "uno", "--port", "/dev/ttyNOPE0"],
        ["verify", MNIST_UNO, "--port", "/dev/ttyNOPE0", "--samples", "1"],
        ["bench", MNIST_UNO, "--port", "/dev/ttyNOPE0"],
    ):
        rc, out, err = _cli(capsys, *argv)
        assert rc == 2 and out == "" and "/dev/ttyNOPE0: no such serial port" in _one_error_line(err)
    rc, _, err = _cli(capsys, "flash", MNIST_UNO, "--board", "due", "--port", "/dev/null")
    assert rc == 2 and "unknown board 'due'" in _one_error_line(err)
    # a model that does not fit: refused with the numbers before anything is uploaded
    small = str(ROOT / "examples" / "models" / "mnist_small.pt")
    rc, out, err = _cli(capsys, "flash", small, "--board", "uno", "--port", "/dev/null")
    line = _one_error_line(err)
    assert rc == 2 and out == "" and "does not fit the uno (ATmega328P): RAM" in line and "> 2048 B" in line


def test_nothing_answering_and_garbage_on_the_line(capsys, tmp_path: Path) -> None:
    master, slave, name = _silent_pty()
    np.save(tmp_path / "x1.npy", np.zeros((1, 1, 28, 28), np.uint8))
    try:
        t0 = time.monotonic()
        rc, out, err = _cli(
            capsys, "verify", MNIST_UNO, "--port", name, "--boot-wait", "0", "--retries", "1", "--samples", "1"
        )
        assert rc == 3 and out == "" and time.monotonic() - t0 < 30
        assert "no valid answer from the ebnn agent after 5 tries" in _one_error_line(err)  # 1 + 1 + 3 to connect

        stop = threading.Event()

        def spew() -> None:  # a board running some other sketch that talks a lot
            rng = random.Random(1)
            while not stop.is_set():
                try:
                    os.write(master, b"temperature 21.5\r\n" + bytes(rng.randrange(256) for _ in range(32)))
                except OSError:
                    return
                time.sleep(0.005)

        th = threading.Thread(target=spew, daemon=True)
        th.start()
        try:
            argv = ["--port", name, "--boot-wait", "0", "--retries", "1", "--input", str(tmp_path / "x1.npy")]
            rc, out, err = _cli(capsys, "run", MNIST_UNO, *argv, "--output", str(tmp_path / "o.npz"))
        finally:
            stop.set()
            th.join(2)
        assert rc == 3 and out == "" and time.monotonic() - t0 < 60
        line = _one_error_line(err)
        assert "no valid answer" in line and "bytes that were not frames came" in line and "temperature" in line
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.emulator
def test_bootloader_silent(capsys) -> None:
    _need_board_tools()
    master, slave, name = _silent_pty()
    try:
        t0 = time.monotonic()
        rc, out, err = _cli(capsys, "flash", MNIST_UNO, "--board", "uno", "--port", name, "--attempts", "1")
        assert rc == 3 and out == "" and time.monotonic() - t0 < 120
        line = _one_error_line(err)
        assert f"avrdude: the bootloader on {name} does not answer" in line
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.arduino
@pytest.mark.emulator
def test_arduino_library_agent_sketch_answers_verify(vuno, tmp_path: Path, capsys) -> None:
    """The agent as an example of the Arduino library export, built by arduino-builder
    against the real core and uploaded as the IDE would: verify --port accepts the board."""
    from test_packaging import ARDUINO_HW, arduino_builder

    require_tools("arduino-builder", "arduino-ctags", ARDUINO_HW, package="arduino-builder arduino-core-avr")
    ckpt = tmp_path / "sk.pt"
    E.save(random_model(small_config("sk"), seed=7), ckpt)
    assert _cli(capsys, "export", str(ckpt), "--format", "arduino", "-o", str(tmp_path / "libraries" / "sk"))[0] == 0
    sketch = tmp_path / "libraries/sk/examples/sk_agent/sk_agent.ino"
    assert "ebnn_agent_main();" in sketch.read_text()
    arduino_builder(sketch, tmp_path / "libraries", tmp_path / "build")
    hexfile = tmp_path / "build" / "sk_agent.ino.hex"
    cmd = ["avrdude", "-c", "arduino", "-p", "atmega328p", "-P", vuno.port, "-b", "115200", "-D"]
    # Uploaded as the IDE does; as with a real Uno whose auto-reset was missed, the user uploads
    # again (re-opening the port resets the board): a few times in many runs, after the module's
    # earlier tests, the emulated board's bootloader answered avrdude's sync with 0x00 on all ten tries.
    for _ in range(3):
        proc = subprocess.run([*cmd, "-U", f"flash:w:{hexfile}:i"], capture_output=True, text=True, timeout=120)
        if proc.returncode == 0 or "not in sync" not in proc.stderr:
            break
        time.sleep(1.0)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rc, out, err = _cli(capsys, "verify", str(ckpt), "--port", vuno.port, "--samples", "3")
    assert rc == 0, out + err
    assert "board == host build (bits, scores, predictions): yes" in out


def test_ddnn_device_tier_on_a_board_gives_the_host_builds_messages(monkeypatch, tmp_path: Path) -> None:
    """`ddnn serve device --port P`: the device section runs through api.board_run on port P
    (here a stand-in board: the host build behind it) and the tier gets the same exit scores
    and feature bits as from the host build."""
    from ebnn_codegen import api
    from ebnn_codegen.ddnn.net.tiers import board_runner, compile_device, device_outputs

    model = E.load("examples/models/ddnn_mvmc_like.pt")
    seen: list[str] = []

    def fake_board_run(graph, x, port, *, kernels="fast", model_path="", log=None):
        seen.append(port.port)
        return api.run(graph, x, kernels=kernels)

    monkeypatch.setattr(api, "board_run", fake_board_run)
    shape = tuple(model.spec.device.input_shape)
    x = np.random.default_rng(3).integers(0, 256, (5, *shape), dtype=np.uint8)
    port = tmp_path / "ttyFAKE"
    port.touch()
    q, feats = board_runner(model, 1, str(port))(x)
    _, _, q_host, f_host = device_outputs(model, 1, x, "c", compile_device(model, 1))
    assert seen == [str(port)]
    np.testing.assert_array_equal(q, q_host)
    np.testing.assert_array_equal(feats, f_host)
