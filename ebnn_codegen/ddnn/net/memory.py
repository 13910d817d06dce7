"""Every tier in one process over the in-memory broker: the network's logic without the network.

:func:`run_in_memory` wires the same tier objects that ``ebnn-gen ddnn
serve`` runs to :class:`~.transport.MemoryTransport` s and streams the
samples through them, deterministically (one thread, a clock that advances
only between chunks of samples: every device that works reports in time,
and a failed one is missing once the deadline has passed).  Devices in ``failed`` are never started; their status
is ``offline``, as after a crash.  The answers equal
:meth:`StagedRuntime.run <ebnn_codegen.ddnn.runtime.StagedRuntime.run>` with
the same ``failed`` (tested): the staged runtime and the networked tiers
differ only in the transport.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..datasets import MultiView
from ..model import DDNN
from . import wire
from .tiers import CloudTier, DeviceTier, GatewayTier, Tier
from .transport import MemoryBroker, MemoryTransport


def run_in_memory(
    model: DDNN,
    data: MultiView,
    *,
    failed: tuple[int, ...] = (),
    clouds: int = 1,
    decision: str = "c",
    system: str = "memory",
    seq_start: int = 0,
    chunk: int = 256,
    runtime: Any = None,
) -> dict[str, Any]:
    """Stream ``data`` through devices, gateway and clouds; returns pred, exit (N,) and the tiers' stats.

    ``runtime``: a :class:`~ebnn_codegen.ddnn.runtime.StagedRuntime` whose compiled
    device sections and host builds the devices reuse.
    """
    broker = MemoryBroker()
    tiers: list[tuple[Tier, MemoryTransport]] = []

    def add(make) -> None:
        t = MemoryTransport(broker)
        tier = make(t)
        t.connect(tier.subscriptions(), tier.status_topic())
        tiers.append((tier, t))

    absent = set(model.config["training"]["absent_devices"]) | set(failed)
    for d in range(model.num_devices):
        if d in absent:
            broker.publish(wire.topic(system, "device", d, "status"), wire.OFFLINE, retain=True)
    add(lambda t: GatewayTier(model, system, t.send, t.ack, decision=decision))
    gateway = tiers[0][0]
    assert isinstance(gateway, GatewayTier)
    for c in range(clouds):
        add(lambda t, c=c: CloudTier(model, system, t.send, t.ack, ident=c))
    for d in range(model.num_devices):
        if d not in absent:
            build = (runtime.graph(d), runtime.host_lib(d)) if runtime is not None else None
            add(lambda t, d=d, build=build: DeviceTier(model, d, system, t.send, t.ack, build=build))
    sink = MemoryTransport(broker)
    sink.connect([wire.topic(system, "gateway", "+", "answer")])
    n = len(data)
    pred = np.full(n, -1, np.int64)
    exit_index = np.full(n, -1, np.int64)
    twice = 0
    unwrap = wire.SeqUnwrap(max_ahead=wire.HALF - 1)
    unwrap.top = seq_start
    names = model.spec.exit_names
    for lo in range(0, n, chunk):
        for i in range(lo, min(n, lo + chunk)):
            seq = (seq_start + i) & 0xFFFF
            for d in range(model.num_devices):
                if d not in absent:
                    broker.publish(
                        wire.topic(system, "source", d, "view"), wire.encode_view(seq, data.x[i, d].tobytes())
                    )
        now = 1000.0 * (lo // chunk + 1)
        for when in (now, now + gateway.deadline, now + 2 * gateway.deadline):
            gateway.tick(when)  # a failed device's samples: decided at the deadline, features after another
            busy = True
            while busy:
                busy = False
                for tier, t in tiers:
                    batch = t.receive(0.0, limit=4096)
                    if batch:
                        tier.handle(batch, when)
                        busy = True
        for _topic, payload, _ in sink.receive(0.0, limit=1 << 30):
            seq, p, ex, _mask = wire.decode_answer(payload, model.num_classes, len(names), model.num_devices)
            i = unwrap.peek(seq) - seq_start
            if pred[i] >= 0:
                twice += 1
            pred[i], exit_index[i] = p, ex
    return {
        "pred": pred,
        "exit_index": exit_index,
        "answered_twice": twice,
        "stats": [tier.stats() for tier, _ in tiers],
    }
