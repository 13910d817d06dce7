"""PNG figures of a sweep, in the style of the DDNN paper's figures (matplotlib, Agg).

* ``threshold``: accuracy of each exit and overall, and the local-exit
  fraction, against the exit threshold T;
* ``scaling``: accuracy of each exit and overall as devices are added,
  least accurate first;
* ``failure``: overall accuracy with each device failed, beside that
  device's own accuracy;
* ``communication``: overall accuracy against bytes per sample (all
  devices together) over the thresholds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

COLORS = {"local": "tab:blue", "edge": "tab:purple", "cloud": "tab:red", "overall": "black", "exit": "tab:green"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "data"


def plot_all(result: dict[str, Any], outdir: str | Path, prefix: str = "ddnn") -> list[Path]:
    """Write the four figures of ``metrics.sweep``'s result into ``outdir``; returns the paths."""
    plt = _plt()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    ev = result["evaluation"]
    title = f"{ev['model']} on {ev['dataset']} ({ev['split']}, {ev['samples']} samples, devices: {ev['devices']})"
    names = list(ev["exit_accuracy"])
    paths = []

    # 1. threshold sweep
    rows = result["threshold_sweep"]
    t = [r["threshold"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for n in names:
        ax.plot(
            t, [100 * ev["exit_accuracy"][n] for _ in rows], "--", color=COLORS.get(n), label=f"{n} exit (all samples)"
        )
    ax.plot(t, [100 * r["overall_accuracy"] for r in rows], "o-", color=COLORS["overall"], label="overall")
    ax.set_xlabel("exit threshold T")
    ax.set_ylabel("accuracy (%)")
    ax2 = ax.twinx()
    ax2.plot(t, [100 * r["local_exit_fraction"] for r in rows], "s:", color=COLORS["exit"], label="exited locally")
    ax2.set_ylabel("samples exited locally (%)", color=COLORS["exit"])
    ax2.set_ylim(-2, 102)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(
        lines[0] + lines2[0], lines[1] + lines2[1], loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8
    )
    ax.axvline(ev["thresholds"]["local"], color="grey", lw=0.8)
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out / f"{prefix}_threshold.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 2. scaling
    sc = ev.get("scaling", [])
    if sc:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        x = [r["devices"] for r in sc]
        for n in names:
            ax.plot(x, [100 * (r["exit_accuracy"][n] or 0) for r in sc], "o--", color=COLORS.get(n), label=f"{n} exit")
        ax.plot(x, [100 * r["overall_accuracy"] for r in sc], "o-", color=COLORS["overall"], label="overall")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{r['devices']}\n(+dev {r['added']})" for r in sc], fontsize=8)
        ax.set_xlabel("number of end devices (least accurate added first)")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_title(title, fontsize=8)
        fig.tight_layout()
        paths.append(out / f"{prefix}_scaling.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    # 3. device failure
    fails = ev["device_failure"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    d = [e["device"] for e in fails]
    w = 0.38
    ax.bar(
        [i - w / 2 for i in d], [100 * ev["device_accuracy"][i] for i in d], w, color="tab:gray", label="device alone"
    )
    ax.bar(
        [i + w / 2 for i in d],
        [100 * e["overall_accuracy"] for e in fails],
        w,
        color="tab:red",
        label="overall with this device failed",
    )
    ax.axhline(
        100 * ev["overall_accuracy"],
        color="black",
        ls="--",
        lw=1,
        label=f"overall, all devices ({100 * ev['overall_accuracy']:.2f} %)",
    )
    ax.set_xticks(d)
    ax.set_xlabel("end device")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 120)
    ax.set_yticks(range(0, 101, 20))
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    paths.append(out / f"{prefix}_failure.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 4. communication against accuracy
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    b = [r["bytes_per_sample"]["total"] for r in rows]
    ax.plot(b, [100 * r["overall_accuracy"] for r in rows], "o-", color=COLORS["overall"])
    marked = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0, ev["thresholds"]["local"])
    for r in rows:
        if not any(abs(r["threshold"] - m) < 1e-9 for m in marked):
            continue
        ax.annotate(
            f"T={r['threshold']:.2f}", (r["bytes_per_sample"]["total"], 100 * r["overall_accuracy"]), fontsize=7
        )
    raw = ev["bytes_per_sample"]["raw"]
    ax.set_xlabel(f"bytes per sample, all devices (raw upload: {raw:.0f} B)")
    ax.set_ylabel("overall accuracy (%)")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    paths.append(out / f"{prefix}_communication.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
