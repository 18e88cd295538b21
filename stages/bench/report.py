"""Verdicts, the JSON summary, the table and the plot of ``edgestream bench pipeline``.

A camera count *holds* when the capture→publish p95 is within the bound and every camera
published at least `RATE_SHARE` of its detect rate over the window (and the run exited
cleanly). ``cameras_held`` is the top of the ramp: the largest count such that it and every
smaller count measured hold (a count that holds above one that did not is noise, not capacity).
``efficiency`` is the most the pipeline published per second in a run whose cameras offered
more than it took (a count of the ramp, or the every-frame run of the largest count: see
`efficiency`), divided by the bare model's best frames/s at a batch size up to the pipeline's
``max_batch``, measured right before and right after the every-frame run (their mean: the
machine's load may change while the bench runs).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RATE_SHARE = 0.9


def judge(row: dict[str, Any], p95_bound_ms: float, rate_fps: float | None) -> None:
    """Set ``row["held"]`` and ``row["not_held"]`` (the reasons, empty when it holds)."""
    why = []
    p95 = row["latency_ms"]["p95"]
    if p95 is None:
        why.append("nothing published in the window")
    elif p95 > p95_bound_ms:
        why.append(f"p95 {p95:g} ms > {p95_bound_ms:g} ms")
    if rate_fps:
        need = RATE_SHARE * rate_fps
        low = sorted(v for v in row["fps_per_camera"].values() if v < need)
        if low:
            why.append(f"{len(low)} camera(s) under {need:g} frames/s (lowest {low[0]:g})")
    if row.get("exit"):
        why.append(f"exit status {row['exit']}")
    row["rate_fps"] = rate_fps
    row["held"] = not why
    row["not_held"] = why


def cameras_held(rows: Sequence[dict[str, Any]]) -> int:
    """The top of the ramp (0 when the smallest count does not hold)."""
    held = 0
    for row in sorted(rows, key=lambda r: r["cameras"]):
        if not row["held"]:
            break
        held = row["cameras"]
    return held


def saturated(row: dict[str, Any]) -> bool:
    """The run was at capacity: its cameras offered at least 10 % more frames than it published
    in the window, and it dropped frames (newest frame wins) — the offered rate alone, from
    counters sampled once a second, is noisy over a short window."""
    offered = row.get("offered_fps", 0.0)
    dropped = sum((row.get("drops") or {}).values())
    return not row.get("error") and offered >= 1.1 * row["fps"] > 0 and dropped > 0


def efficiency(
    rows: Sequence[dict[str, Any]], eff_row: dict[str, Any] | None, top: dict[str, Any] | None
) -> tuple[float | None, dict[str, Any] | None, bool]:
    """``(efficiency, the run it comes from, whether that run was at capacity)``.

    The pipeline's capacity is the most it published in a run whose cameras offered more than
    it took (`saturated`): any count of the ramp or the every-frame run. On a CPU the every-frame
    run of many high-resolution cameras can be bound by decoding instead (decode shares the
    cores with the model), so it does not get the last word. Without a run at capacity, the
    every-frame run's figure is given, flagged as not at capacity."""
    if top is None:
        return None, None, False
    runs = [r for r in [*rows, *([eff_row] if eff_row else [])] if not r.get("error")]
    full = [r for r in runs if saturated(r)]
    if full:
        best = max(full, key=lambda r: r["fps"])
        return round(best["fps"] / top["fps"], 3), best, True
    if eff_row is not None and not eff_row.get("error"):
        return round(eff_row["fps"] / top["fps"], 3), eff_row, False
    return None, None, False


def ceiling(bare: Sequence[dict[str, Any]], max_batch: int) -> dict[str, Any] | None:
    """The bare model row with the most frames/s at a batch up to ``max_batch``."""
    rows = [r for r in bare if r["batch"] <= max_batch]
    return max(rows, key=lambda r: r["fps"]) if rows else None


def average_bare(
    before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Per batch size, the mean of the measurements before and after the efficiency run (the
    machine may have changed meanwhile)."""
    out = []
    for b in before:
        a = next((r for r in after if r["batch"] == b["batch"]), b)
        ms = (b["ms_per_batch"] + a["ms_per_batch"]) / 2
        k = b.get("instances", 1)  # model copies at once: frames/s of them all
        out.append(
            {
                "batch": b["batch"],
                "ms_per_batch": round(ms, 2),
                "ms_per_image": round(ms / b["batch"], 2),
                "fps": round(1e3 * b["batch"] * k / ms, 2),
                "instances": k,
            }
        )
    return out


def machine() -> dict[str, Any]:
    """CPU model and count, memory, OS, Python (no host name)."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ------------------------------------------------------------------------------ table


def _drops(row: dict[str, Any]) -> str:
    parts = [f"{reason} {n}" for reason, n in row["drops"].items() if n]
    return ", ".join(parts) or "0"


def _lat(row: dict[str, Any]) -> str:
    lat = row["latency_ms"]
    if lat["p50"] is None:
        return "-"
    return f"{lat['p50']:.0f} / {lat['p95']:.0f} / {lat['p99']:.0f}"


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Header and one line per (count, system), counts ascending, edgestream first; then the
    efficiency run."""
    rows = list(summary["rows"]) + list((summary.get("baseline") or {}).get("rows", []))
    rows.sort(key=lambda r: (r["cameras"], r["system"] != "edgestream"))
    eff = summary.get("efficiency_run")
    if eff is not None:  # last: the efficiency run, every frame of every camera
        rows.append({**eff, "system": "edgestream, every frame", "held": None})
    out = [
        [
            "cameras",
            "system",
            "frames/s",
            "min/cam",
            "p50 / p95 / p99 ms",
            "drops",
            "CPU cores",
            "PSS MB",
            "batch",
            "load",
            "held",
        ]
    ]
    for r in rows:
        mem = r.get("pss_mb", r.get("rss_mb"))
        out.append(
            [
                str(r["cameras"]),
                r["system"],
                f"{r['fps']:.1f}",
                f"{min(r['fps_per_camera'].values(), default=0):.1f}",
                _lat(r),
                _drops(r),
                f"{r['cpu_cores']:.2f}",
                f"{mem:.0f}" if mem is not None else "-",
                f"{r['mean_batch']:.1f}" if r.get("mean_batch") else "-",
                f"{r['load_avg_1m']:.1f}" if r.get("load_avg_1m") is not None else "-",
                "-" if r["held"] is None else "yes" if r["held"] else "no",
            ]
        )
    return out


def format_table(summary: dict[str, Any], markdown: bool = False) -> str:
    rows = table_rows(summary)
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def verdict_lines(summary: dict[str, Any]) -> list[str]:
    s = summary
    rate = (
        f" with every camera at >= {RATE_SHARE:.0%} of {s['rate_fps']:g} frames/s"
        if s["rate_fps"]
        else ""
    )
    lines = [f"cameras_held: {s['cameras_held']} (p95 <= {s['p95_ms']:g} ms{rate})"]
    base = s.get("baseline")
    if base is not None:
        ratio = s.get("held_ratio")
        lines.append(
            f"baseline loop holds {base['cameras_held']}"
            + (f"; edgestream / loop = {ratio:g}x" if ratio is not None else "")
        )
    eff = s.get("efficiency_from")
    if s.get("efficiency") is not None and eff is not None:
        c = s["bare_model"]["ceiling"]
        rate = "every frame" if not eff.get("detect_fps") else f"{eff['detect_fps']:g} frames/s"
        lines.append(
            f"efficiency: {s['efficiency']:.2f} = {eff['fps']:.1f} frames/s published by "
            f"{eff['cameras']} cameras at {rate} (offered {eff.get('offered_fps', 0):.0f}/s) "
            f"/ {c['fps']:.1f} frames/s of the bare model (batch {c['batch']})"
        )
        if not s.get("efficiency_saturated"):
            lines.append(
                "  (not at capacity: the cameras offered no more than the pipeline published; "
                "raise --efficiency-cameras for a figure that means the ceiling)"
            )
    for r in (s["rows"][:1], (base or {}).get("rows", [])[:1]):
        stages = r[0].get("stages_p50_ms") if r else None
        if stages:
            path = " -> ".join(f"{k} {v:.0f}" for k, v in stages.items())
            lines.append(
                f"{r[0]['system']} at {r[0]['cameras']} camera(s), median ms from "
                f"capture to the end of each stage: {path}"
            )
    top = [r for r in (s["rows"][-1:], (base or {}).get("rows", [])[-1:]) if r]
    for (row,) in top:
        if row.get("cpu_by_role"):
            parts = ", ".join(f"{k} {v:.2f}" for k, v in row["cpu_by_role"].items())
            lines.append(
                f"{row['system']} at {row['cameras']} camera(s), CPU cores by process: {parts}"
            )
    for r in [*s["rows"], *((base or {}).get("rows", []))]:
        if r.get("unaccounted"):
            lines.append(
                f"WARNING: {r['system']} {r['cameras']} cameras: {r['unaccounted']} "
                "frames neither published nor counted as dropped"
            )
    return lines


# ------------------------------------------------------------------------------ plot


def plot(summary: dict[str, Any], path: Path) -> None:
    """Latency (p50, p95) and throughput against cameras, edgestream and the loop, as PNG."""
    try:
        import matplotlib
    except ImportError:
        from pipeline.extras import MissingExtraError

        raise MissingExtraError("matplotlib", "--plot", extra="bench") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [("edgestream", summary["rows"], "tab:blue")]
    if summary.get("baseline"):
        systems.append(("loop", summary["baseline"]["rows"], "tab:orange"))
    fig, (ax_lat, ax_fps) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, rows, color in systems:
        rows = sorted((r for r in rows if not r.get("error")), key=lambda r: r["cameras"])
        x = [r["cameras"] for r in rows]
        p50 = [r["latency_ms"]["p50"] for r in rows]
        p95 = [r["latency_ms"]["p95"] for r in rows]
        ax_lat.plot(x, p95, "o-", color=color, label=f"{name} p95")
        ax_lat.plot(x, p50, "s--", color=color, alpha=0.6, label=f"{name} p50")
        ax_fps.plot(x, [r["fps"] for r in rows], "o-", color=color, label=f"{name} published")
    ax_lat.axhline(
        summary["p95_ms"], color="grey", ls=":", label=f"p95 bound {summary['p95_ms']:g} ms"
    )
    ax_lat.set(xlabel="cameras", ylabel="capture → publish (ms)", title="latency")
    counts = sorted({r["cameras"] for r in summary["rows"]})
    if summary.get("rate_fps"):
        ax_fps.plot(
            counts,
            [c * summary["rate_fps"] for c in counts],
            ":",
            color="grey",
            label="offered (cameras x detect rate)",
        )
    c = (summary.get("bare_model") or {}).get("ceiling")
    if c:
        ax_fps.axhline(c["fps"], color="tab:red", ls="--", label=f"bare model (batch {c['batch']})")
    ax_fps.set(xlabel="cameras", ylabel="frames/s", title="throughput")
    for ax in (ax_lat, ax_fps):
        ax.set_xticks(counts)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    m = summary["model"]
    fig.suptitle(
        f"edgestream bench: {Path(str(m['weights'])).name} on {m['backend']}/{m['device']}, "
        f"{summary['machine'].get('cpus')} CPUs, {summary['date']}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
