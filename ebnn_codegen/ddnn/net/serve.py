"""The loop of one tier process: receive, hand to the tier, act on deadlines; stop cleanly.

:func:`serve` runs a :class:`~.tiers.Tier` over a transport until ``stop``
is set (the CLI sets it on SIGTERM or SIGINT).  Stopping finishes the
in-flight work: the messages already received are handled; a gateway
completes the samples it has started (each within its deadline) and leaves
messages of new samples unacknowledged, so that its next session (same
client id, persistent session) receives them; then the tier publishes its
``offline`` status, waits for the broker to acknowledge its publishes and
disconnects.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from .tiers import Tier

POLL_S = 0.2


def serve(tier: Tier, transport: Any, stop: threading.Event, drain_s: float = 30.0) -> dict[str, Any]:
    """Run ``tier`` until ``stop``; returns its statistics (counters and bytes on the wire)."""
    cpu0 = time.process_time()
    transport.connect(tier.subscriptions(), tier.status_topic())
    generation = getattr(transport, "generation", 0)
    while not stop.is_set():
        if getattr(transport, "generation", 0) != generation:  # the connection was lost and is back
            generation = transport.generation
            tier.reconnected(time.monotonic())
        wake = tier.next_wakeup(time.monotonic())
        batch = transport.receive(POLL_S if wake is None else min(POLL_S, wake + 1e-3))
        if batch:
            tier.handle(batch, time.monotonic())
        tier.tick(time.monotonic())
    tier.stopping = True
    end = time.monotonic() + drain_s
    first = True
    while time.monotonic() < end and (first or tier.busy()):
        batch = transport.receive(0.0 if first else 0.02)
        if batch:
            tier.handle(batch, time.monotonic())
        tier.tick(time.monotonic())
        first = False
    transport.close()
    return stats(tier, transport, cpu0)


def stats(tier: Tier, transport: Any, cpu0: float = 0.0) -> dict[str, Any]:
    """The tier's counters, its CPU seconds while serving and its bytes on the wire."""
    return {**tier.stats(), "cpu_s": time.process_time() - cpu0, "wire": transport.wire.as_dict()}


def write_stats(path: str | None, data: dict[str, Any]) -> None:
    if path:
        p = Path(path)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(p)
