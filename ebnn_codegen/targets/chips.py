"""The chip catalogue: memories, clock and the reserves the fit check leaves for the rest.

Data only.  A target names its chip by key (``CHIPS["atmega328p"]``); a new chip is a new
entry here.  The *budget* of a chip is what a model may use: flash minus the bootloader
and the application's share (sketch, libc, start-up code), RAM minus the application's
share (libc or Arduino core buffers, interrupts).  The reserves are stated in
``reserve_note`` and printed with every refusal; docs/targets.md explains them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chip:
    """A chip's memories and clock, and what the fit check's budget leaves for the rest."""

    name: str  # as the vendor writes it, e.g. "ATmega328P"
    flash_bytes: int
    sram_bytes: int
    clock_hz: int
    bootloader_bytes: int  # flash taken by a bootloader (0: none)
    app_flash_bytes: int  # flash left for the application around the model (sketch, libc, start-up)
    sram_reserved: int  # RAM left for the application, libc / core buffers, interrupts
    reserve_note: str

    @property
    def flash_reserved(self) -> int:
        return self.bootloader_bytes + self.app_flash_bytes

    @property
    def flash_budget(self) -> int:
        return self.flash_bytes - self.flash_reserved

    @property
    def sram_budget(self) -> int:
        return self.sram_bytes - self.sram_reserved

    @property
    def flash_after_bootloader(self) -> int:
        return self.flash_bytes - self.bootloader_bytes


KB = 1024
_M_NOTE = "budget: flash minus {f} KB and RAM minus {r} KB for the application, libc and start-up code"

CHIPS: dict[str, Chip] = {
    "atmega328p": Chip(
        "ATmega328P",
        32 * KB,
        2 * KB,
        16_000_000,
        512,
        2 * KB,
        384,
        "budget: flash minus the 512 B bootloader and 2 KB for the sketch and Arduino core; "
        "RAM minus 384 B for the Arduino core (Serial buffers), the sketch and interrupts",
    ),
    "atmega644p": Chip(
        "ATmega644P",
        64 * KB,
        4 * KB,
        16_000_000,
        512,
        2 * KB,
        384,
        "used only to verify models whose verification harness needs more RAM than the ATmega328P has",
    ),
    "nrf51822": Chip("nRF51822", 256 * KB, 16 * KB, 16_000_000, 0, 16 * KB, 2 * KB, _M_NOTE.format(f=16, r=2)),
    "stm32f103c8": Chip("STM32F103C8", 64 * KB, 20 * KB, 72_000_000, 0, 8 * KB, 2 * KB, _M_NOTE.format(f=8, r=2)),
    "stm32f411ce": Chip("STM32F411CE", 512 * KB, 128 * KB, 100_000_000, 0, 16 * KB, 4 * KB, _M_NOTE.format(f=16, r=4)),
    "esp32c3": Chip(
        "ESP32-C3",
        1024 * KB,
        320 * KB,
        160_000_000,
        0,
        256 * KB,
        64 * KB,
        "budget: the default 1 MB app partition minus 256 KB and 320 KB of SRAM minus 64 KB for ESP-IDF",
    ),
}
