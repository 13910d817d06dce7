"""The xtensa-lx106 target's own plumbing: start-up, exceptions, semihosting, the libgcc helpers
the Debian toolchain lacks, the CLI, the ESP8266 budget.  (Parity with torch on random
architectures and the shipped models runs in tests/test_targets_mcu.py with the other targets.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import random_model, require_tools, strict_tools

import ebnn_codegen as E
from ebnn_codegen import api, targets
from ebnn_codegen.cli import main as cli_main
from ebnn_codegen.errors import FitError, ResourceError, ToolError
from ebnn_codegen.targets import esp8266, xtensa
from ebnn_codegen.targets.elfsize import addresses_of

pytestmark = pytest.mark.emulator

TINY = {
    "name": "xt_tiny",
    "input": [2, 9, 7],
    "layers": [
        {"type": "conv", "out_channels": 12, "kernel": 3, "padding": 1, "pool": {"kernel": 2, "stride": 2}},
        {"type": "bconv", "out_channels": 9, "kernel": [2, 3], "padding": [0, 1]},
        {"type": "blinear", "out_features": 33},
        {"type": "exit", "classes": 4},
    ],
}


def need() -> xtensa.XtensaTarget:
    t = targets.get("xtensa-lx106")
    require_tools(*t.tools, xtensa.picolibc_specs(), package=t.packages)
    return t


def test_registered_with_the_esp8266_budget():
    t = targets.get("xtensa-lx106")
    assert t is xtensa.XTENSA_LX106 and "xtensa-lx106" in targets.names()
    assert t.chip.name == "ESP8266" and t.chip.clock_hz == 80_000_000
    assert t.chip.sram_bytes == 80 * 1024 and t.chip.flash_bytes == 1024 * 1024
    assert 0 < t.chip.sram_budget < t.chip.sram_bytes and 0 < t.chip.flash_budget < t.chip.flash_bytes


def test_exception_ends_qemu_with_the_cause():
    """An illegal instruction (EXCCAUSE 0) stops qemu with exit 128 instead of hanging."""
    t = need()
    elf = t.build_program(
        {"ill.c": 'int main(void);\nint main(void)\n{\n    __asm__ volatile("ill");\n    return 0;\n}\n'}
    )
    emu = t.emulate(elf, timeout_s=30)
    assert emu.returncode == 128
    with pytest.raises(ToolError, match="EXCCAUSE 0"):
        t.check_verdict(emu, 1, elf)


def test_stdout_and_exit_code_through_semihosting():
    t = need()
    elf = t.build_program(
        {
            "fail.c": '#include <stdio.h>\nint main(void);\nint main(void)\n{\n    printf("oops %d\\n", -42);\n    return 3;\n}\n'
        }
    )
    emu = t.emulate(elf, timeout_s=30)
    assert emu.returncode == 3 and "oops -42" in emu.text
    with pytest.raises(ToolError, match="harness failed.*exit code 3"):
        t.check_verdict(emu, 1, elf)


def _arith_program(pairs32: list[tuple[int, int]], pairs64: list[tuple[int, int]]) -> str:
    rows32 = ",\n".join(f"    {{{a}u, {b}u}}" for a, b in pairs32)
    rows64 = ",\n".join(f"    {{{a}ull, {b}ull}}" for a, b in pairs64)
    return f"""#include <stdint.h>
#include <stdio.h>
int main(void);
static const uint32_t P32[][2] = {{
{rows32}
}};
static const uint64_t P64[][2] = {{
{rows64}
}};
int main(void)
{{
    size_t i;
    for (i = 0; i < sizeof P32 / sizeof P32[0]; i++) {{
        volatile uint32_t a = P32[i][0], b = P32[i][1];
        int32_t sa = (int32_t)a, sb = (int32_t)b;
        printf("u32 %lu %lu %ld\\n", (unsigned long)(a / b), (unsigned long)(a % b), (long)(sa / sb));
    }}
    for (i = 0; i < sizeof P64 / sizeof P64[0]; i++) {{
        volatile uint64_t a = P64[i][0], b = P64[i][1];
        int64_t sa = (int64_t)a, sb = (int64_t)b;
        printf("u64 %llu %llu %lld %lld %llu\\n", (unsigned long long)(a / b), (unsigned long long)(a % b),
               (long long)(sa / sb), (long long)(sa % sb), (unsigned long long)(a * b));
    }}
    return 0;
}}
"""


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def test_libgcc_helpers_match_python():
    """__udivsi3 & co. (missing from Debian's lx106 libgcc) against Python, edge values included
    (INT_MIN / -1 wraps, as the helpers do)."""
    t = need()
    rng = np.random.default_rng(5)
    m32, m64 = (1 << 32) - 1, (1 << 64) - 1
    pairs32 = [(0, 1), (1, 1), (m32, 1), (m32, m32), (m32, 3), (1 << 31, m32), (5, 7), (100, 3), (m32, 1 << 31)]
    pairs32 += [(int(rng.integers(0, 1 << 32)), int(rng.integers(1, 1 << int(rng.integers(1, 33))))) for _ in range(40)]
    pairs64 = [(0, 1), (m64, 1), (m64, m64), (m64, 3), (1 << 63, m64), (1 << 63, 1 << 63), (12345, 1 << 40)]
    pairs64 += [
        (int(rng.integers(0, 1 << 63)) * 2 + 1, int(rng.integers(1, 1 << 62)) >> int(rng.integers(0, 62)) or 1)
        for _ in range(40)
    ]
    elf = t.build_program({"arith.c": _arith_program(pairs32, pairs64)})
    emu = t.emulate(elf, timeout_s=60)
    assert emu.returncode == 0, emu.text[-2000:]
    lines = [line.split() for line in emu.text.splitlines() if line.startswith(("u32 ", "u64 "))]
    assert len(lines) == len(pairs32) + len(pairs64)

    def s32(v: int) -> int:
        return v - (1 << 32) if v >= 1 << 31 else v

    def s64(v: int) -> int:
        return v - (1 << 64) if v >= 1 << 63 else v

    for (a, b), got in zip(pairs32, lines[: len(pairs32)], strict=True):
        assert [int(v) for v in got[1:]] == [a // b, a % b, s32(_trunc_div(s32(a), s32(b)) & m32)], (a, b)
    for (a, b), got in zip(pairs64, lines[len(pairs32) :], strict=True):
        sa, sb = s64(a), s64(b)
        q = _trunc_div(sa, sb)
        assert [int(v) for v in got[1:]] == [a // b, a % b, s64(q & m64), sa - q * sb, (a * b) & m64], (a, b)


def test_check_fits_uses_the_esp8266_budget():
    t = targets.get("xtensa-lx106")
    big = {
        "name": "xt_big",
        "input": [4, 128, 128],  # a 64 KB input: over the 48 KB of RAM the budget leaves
        "layers": [
            {"type": "conv", "out_channels": 8, "kernel": 3, "padding": 1, "pool": {"kernel": 8, "stride": 8}},
            {"type": "blinear", "out_features": 16},
            {"type": "exit", "classes": 2},
        ],
    }
    graph = E.compile(random_model(big, 1))
    with pytest.raises(FitError, match=rf"RAM, ESP8266 has 81,920 B \({t.chip.sram_budget:,} B for the model\)"):
        t.check_fits(graph, "fast", measure=False)
    small = E.compile(random_model(TINY, 2))
    assert t.check_fits(small, "fast", measure=False).measured is False


def test_check_fits_measures_mnist_uno():
    t = need()
    graph = E.compile(E.load("examples/models/mnist_uno.pt"))
    checked = t.check_fits(graph, "fast")
    assert checked.measured and checked.chip == "ESP8266"
    assert checked.flash_bytes >= api.report(graph)["totals"]["flash_bytes"]


def test_cli_run_verify_report_bench(tmp_path, capsys):
    need()
    model = random_model(TINY, 3)
    ckpt = tmp_path / "m.pt"
    E.save(model, ckpt)
    graph = E.compile(model)
    x = api.random_inputs(graph.input_shape, 3, seed=11)
    np.save(tmp_path / "x.npy", x)
    args = ["--target", "xtensa-lx106"]
    assert (
        cli_main(
            ["-q", "run", str(ckpt), *args, "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "o.npz")]
        )
        == 0
    )
    host = api.run(graph, x)
    with np.load(tmp_path / "o.npz") as npz:
        np.testing.assert_array_equal(npz["scores"], host.scores)
        np.testing.assert_array_equal(npz["pred"], host.pred)
        for i, layer in enumerate(host.layers):
            np.testing.assert_array_equal(npz[f"layer_{i}"], layer)
    assert cli_main(["-q", "verify", str(ckpt), *args, "--samples", "3", "--kernels", "reference"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert cli_main(["-q", "report", str(ckpt), *args, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["target"]["chip"] == "ESP8266" and rep["target"]["peak_stack_bytes"] > 0
    assert cli_main(["-q", "bench", str(ckpt), *args, "--json"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert b["target"] == "xtensa-lx106" and b["instructions"] > b["binary_macs"] // 32
    assert "80 MHz" in b["ms_at_clock_assumes"]


# ---------------------------------------------------------------------------------------
# ESP8266: the bare-metal application and its esptool image
# ---------------------------------------------------------------------------------------


def need_esptool() -> None:
    if not esp8266.esptool_available():
        msg = f"esptool is not installed: {esp8266.ESPTOOL_HINT}"
        if strict_tools():
            pytest.fail(msg + " (CI=true: tests needing tools must not skip)")
        pytest.skip(msg)


def test_esp8266_application_is_bit_exact_in_qemu():
    """The ESP8266-layout program (IRAM code, data-RAM constants, own _start) computes the host's
    classes and scores when qemu starts it at its ELF entry, as the ROM bootloader would."""
    need()
    graph = E.compile(E.load("examples/models/mnist_uno.pt"))
    x = api.random_inputs(graph.input_shape, 3, seed=7)
    got = esp8266.run_in_qemu(esp8266.build_app(esp8266.ESP8266_APP_QEMU, graph, x))
    host = api.run(graph, x)
    assert [p for p, _ in got] == host.pred.tolist()
    assert [s for _, s in got] == host.scores.tolist()


def test_esp8266_flash_image_is_accepted_by_esptool(tmp_path):
    need()
    need_esptool()
    graph = E.compile(random_model(TINY, 4))
    x = api.random_inputs(graph.input_shape, 2, seed=1)
    img = esp8266.esp8266_flash_image(graph, x, tmp_path)
    assert [off for off, _ in img.files] == [0x0]
    path = img.files[0][1]
    assert path.name == "xt_tiny-0x00000.bin" and path.read_bytes()[0] == 0xE9  # ESP8266 image magic
    info = esp8266.image_info(path)
    entry = addresses_of(esp8266.ESP8266_APP.toolchain, img.elf)["_start"]
    assert f"Entry point: 0x{entry:08x}" in info
    assert "(valid)" in info and "IRAM" in info and "DRAM" in info
    cmd = img.write_flash_command("/dev/ttyUSB0")
    assert cmd[1:] == [
        "-m",
        "esptool",
        "--chip",
        "esp8266",
        "--port",
        "/dev/ttyUSB0",
        "--baud",
        "460800",
        "write-flash",
        "--flash-mode",
        "dio",
        "--flash-size",
        "detect",
        "0x00000",
        str(path),
    ]


def test_esptool_rejects_a_corrupt_image(tmp_path):
    need_esptool()
    bad = tmp_path / "bad-0x00000.bin"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ToolError, match="image-info failed"):
        esp8266.image_info(bad)


def test_esp8266_application_refuses_a_model_over_the_data_ram():
    need()
    cfg = {
        "name": "xt_wide",
        "input": [1, 8, 8],
        "layers": [
            {"type": "conv", "out_channels": 8, "kernel": 1},
            {"type": "blinear", "out_features": 1500},
            {"type": "blinear", "out_features": 400},
            {"type": "exit", "classes": 2},
        ],
    }  # 1500 x 400 bits = 75 KB of weights
    graph = E.compile(random_model(cfg, 5))
    with pytest.raises(ResourceError, match="ESP8266's 80 KB of data RAM"):
        esp8266.build_app(esp8266.ESP8266_APP, graph, api.random_inputs(graph.input_shape, 1, seed=2))
