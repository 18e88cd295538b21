"""``edgestream bench``: a short real run (real processes, real Redis, the baseline loop beside
the pipeline), checked for a JSON whose figures agree with each other, plus the refusals that
must come before anything starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from stages.bench import report

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests" / "sinks") not in sys.path:  # the real redis-server helper
    sys.path.insert(0, str(REPO / "tests" / "sinks"))

from redis_server import REDIS_SERVER, RedisServer  # noqa: E402

SMALL = ["--size", "320x192", "--scene-seconds", "4"]  # quick synthetic scenes


def _check_row(row: dict[str, Any], cameras: int, bound: float, rate: float | None) -> None:
    assert "error" not in row, row.get("error")
    assert row["cameras"] == cameras
    # every frame decode took in is published or counted as dropped, by reason
    assert row["offered"] > 0 and row["published"] > 0
    assert row["published"] + sum(row["drops"].values()) == row["offered"], row
    assert row["unaccounted"] == 0
    # the window's frames are a part of what was published, spread over every camera
    assert 0 < row["frames"] <= row["published"]
    assert len(row["fps_per_camera"]) == cameras
    assert row["fps"] == pytest.approx(sum(row["fps_per_camera"].values()), abs=0.05)
    lat = row["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert row["cpu_cores"] > 0 and row["rss_mb"] > 0
    # CPU by process role sums to the total (each rounded to 0.01)
    by_role = row["cpu_by_role"]
    assert by_role and all(v >= 0 for v in by_role.values())
    assert sum(by_role.values()) == pytest.approx(row["cpu_cores"], abs=0.01 * len(by_role) + 0.01)
    if row["system"] == "edgestream":  # a CPU model: decode letterboxes, no preprocess workers
        assert {"decode", "detect", "track", "sink"} == set(by_role), by_role
    else:
        assert set(by_role) == {"loop"}
    # where the time goes: ms since capture at the end of each stage, in order, ending at publish
    stages = row["stages_p50_ms"]
    assert list(stages)[-1] == "publish" and stages["publish"] == lat["p50"]
    assert list(stages.values()) == sorted(stages.values())
    tails = row["stages_p95_ms"]  # the same marks' 95th percentiles
    assert list(tails) == list(stages) and tails["publish"] == lat["p95"]
    assert all(tails[k] >= stages[k] for k in stages)
    # the verdict follows from the row's own figures and the bound
    slow = rate is not None and min(row["fps_per_camera"].values()) < report.RATE_SHARE * rate
    assert row["held"] == (lat["p95"] <= bound and not slow and not row["exit"]), row


@pytest.mark.redis
@pytest.mark.slow  # 5 real runs of a few seconds each: ~50 s idle, ~2 min on a loaded 2-core box
@pytest.mark.timeout(600)
def test_bench_pipeline_with_loop_real_redis(
    tmp_path: Path, require: Callable[[str | None], None]
) -> None:
    require(None if REDIS_SERVER else "redis-server not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis").start()
    try:
        out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
        bound = 400.0
        cmd = [
            sys.executable,
            "-m",
            "pipeline.cli",
            "bench",
            "pipeline",
            "--cameras",
            "1",
            "2",
            "--seconds",
            "3",
            "--min-frames",
            "20",
            "--warmup",
            "1",
            "--detect-fps",
            "5",
            "--p95-ms",
            str(bound),
            "--baseline",
            "loop",
            "--redis",
            server.url,
            "--bare-seconds",
            "1",
            "--workdir",
            str(tmp_path / "work"),
            *SMALL,
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
        ]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=540)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        s = json.loads(out_json.read_text())
        # the bench's streams were read back and removed from the Redis it was given
        assert server.admin().keys("*") == []
    finally:
        server.stop()

    for key in ("cameras_held", "efficiency", "p95_ms", "rows", "baseline", "bare_model"):
        assert key in s
    assert s["p95_ms"] == bound and s["rate_fps"] == 5.0 and s["sink"] == "redis"
    assert [r["cameras"] for r in s["rows"]] == [1, 2]
    assert [r["cameras"] for r in s["baseline"]["rows"]] == [1, 2]
    for row in s["rows"]:
        _check_row(row, row["cameras"], bound, 5.0)
        assert row["mean_batch"] >= 1
    for row in s["baseline"]["rows"]:
        _check_row(row, row["cameras"], bound, 5.0)
        assert set(row["drops"]) == {"loop/superseded", "loop/shutdown"}
    # --min-frames 20: 1 camera at 5 frames/s is measured 4 s, 2 cameras the 3 s of --seconds
    for row in (*s["rows"], *s["baseline"]["rows"]):
        assert row["window_s"] == pytest.approx(4.0 if row["cameras"] == 1 else 3.0, abs=0.05)
    # cameras_held: the top of the ramp of held counts
    ramp = 0
    for row in s["rows"]:
        if not row["held"]:
            break
        ramp = row["cameras"]
    assert s["cameras_held"] == ramp
    assert s["baseline"]["cameras_held"] == report.cameras_held(s["baseline"]["rows"])
    # efficiency: the most published by a run at capacity (cameras offered >= 1.1 x what was
    # published: whether any was depends on the box), else the every-frame run, flagged, over
    # the bare model's best batch
    eff = s["efficiency_run"]
    _check_row(eff, 2, bound, 25.0)
    bare = s["bare_model"]["mean"]
    best = max((r for r in bare if r["batch"] <= s["model"]["max_batch"]), key=lambda r: r["fps"])
    assert s["bare_model"]["ceiling"] == best
    full = [
        r
        for r in [*s["rows"], eff]
        if r["offered_fps"] >= 1.1 * r["fps"] and sum(r["drops"].values())
    ]
    assert s["efficiency_saturated"] == bool(full)
    source = max(full, key=lambda r: r["fps"]) if full else eff
    assert s["efficiency_from"]["fps"] == source["fps"]
    assert s["efficiency"] == pytest.approx(source["fps"] / best["fps"], abs=1e-3)
    assert 0 < s["efficiency"] < 2
    # the table has a line per count and system; the plot is a real PNG of the figure's size
    assert proc.stdout.count(" edgestream ") >= 2 and proc.stdout.count(" loop ") >= 2
    assert f"cameras_held: {s['cameras_held']}" in proc.stdout
    png = out_png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1210, 462)  # 11 x 4.2 inches at 110 dpi


@pytest.mark.rtsp
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_pipeline_over_rtsp(tmp_path: Path, require: Callable[[str | None], None]) -> None:
    """``--source rtsp``: the scenes served by the local GStreamer server, a mount per camera;
    the server is gone afterwards."""
    import psutil

    if str(REPO / "tests" / "decode") not in sys.path:
        sys.path.insert(0, str(REPO / "tests" / "decode"))
    from rtsp_harness import gstreamer_missing

    require(gstreamer_missing())
    out_json = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "bench",
        "pipeline",
        "--source",
        "rtsp",
        "--cameras",
        "2",
        "--seconds",
        "3",
        "--min-frames",
        "0",
        "--warmup",
        "1",
        "--p95-ms",
        "1000",
        "--efficiency-cameras",
        "0",
        "--bare-seconds",
        "0.5",
        "--workdir",
        str(tmp_path / "work"),
        *SMALL,
        "--json",
        str(out_json),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads(out_json.read_text())
    assert "over RTSP" in s["source"]
    (row,) = s["rows"]
    # no efficiency run was asked for: a figure comes only from a ramp row judged at capacity
    # (on a loaded machine 2 cameras can be), and then says so
    if s["efficiency"] is not None:
        assert report.saturated(row) and s["efficiency_saturated"], s
        assert s["efficiency_from"]["cameras"] == 2 and s["efficiency_from"]["fps"] == row["fps"]
    _check_row(row, 2, 1000.0, 5.0)
    leftovers = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []


def test_bench_model_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.json"
    code = main(
        [
            "bench",
            "model",
            "--batch",
            "1",
            "2",
            "--seconds",
            "0.3",
            "--device",
            "cpu",
            "--workdir",
            str(tmp_path),
            *SMALL,
            "--json",
            str(out),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["model"]["backend"] == "onnxruntime" and doc["model"]["device"] == "cpu"
    assert [r["batch"] for r in doc["rows"]] == [1, 2]
    for r in doc["rows"]:
        assert r["calls"] >= 3 and r["ms_per_batch"] > 0
        k = r["instances"]  # auto: 2 copies at once on a CPU with 2+ cores
        assert k == (2 if len(os.sched_getaffinity(0)) >= 2 else 1)
        assert r["fps"] == pytest.approx(1e3 * r["batch"] * k / r["ms_per_batch"], rel=0.01)
    assert "frames/s" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cameras", "0", "2"], "distinct counts >= 1"),
        (["--cameras", "2", "2"], "distinct counts >= 1"),
        (["--seconds", "0"], "--seconds 0: must be > 0"),
        (["--min-frames", "-1"], "--min-frames -1: must be >= 0"),
        (["--weights", "/nonexistent/w.onnx"], "w.onnx"),
        (["--source", "/nonexistent/clip.mp4"], "no such file"),
        (["--plot", "out.jpg"], "give a .png"),
        (["--size", "640by480"], None),  # argparse: exit 2 with usage
    ],
)
def test_bad_input_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str | None
) -> None:
    work = tmp_path / "work"
    try:
        code = main(["bench", "pipeline", "--workdir", str(work), *args])
    except SystemExit as exc:  # argparse's own refusal
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    if says is not None:
        assert says in err, err
    assert not (work / "runs").exists()  # no run was started


def test_cameras_held_is_the_top_of_the_ramp() -> None:
    def row(n: int, p95: float, fps: float) -> dict[str, Any]:
        r = {
            "cameras": n,
            "latency_ms": {"p95": p95},
            "fps_per_camera": {f"c{i}": fps for i in range(n)},
            "exit": 0,
        }
        report.judge(r, 150.0, 5.0)
        return r

    rows = [row(1, 40, 5.0), row(2, 90, 4.6), row(4, 160, 5.0), row(6, 120, 5.0)]
    assert [r["held"] for r in rows] == [True, True, False, True]
    assert rows[2]["not_held"] == ["p95 160 ms > 150 ms"]
    assert report.cameras_held(rows) == 2  # 6 held after 4 failed: noise, not capacity
    slow = row(1, 40, 4.4)  # under 90 % of 5 frames/s
    assert not slow["held"] and "under 4.5 frames/s" in slow["not_held"][0]
    assert report.cameras_held([slow, *rows]) == 0


def test_efficiency_takes_the_best_run_at_capacity() -> None:
    def run(cameras: int, fps: float, offered: float) -> dict[str, Any]:
        dropped = round(offered - fps)  # at capacity, the frames it could not take are dropped
        return {
            "cameras": cameras,
            "fps": fps,
            "offered_fps": offered,
            "drops": {"detect/superseded": dropped},
        }

    top = {"batch": 8, "fps": 40.0}
    ramp = [run(4, 20.0, 20.0), run(8, 39.0, 40.0), run(10, 39.6, 50.0), run(12, 10.0, 60.0)]
    every_frame = run(12, 4.6, 300.0)  # decode-bound: at capacity, but far below the best
    eff, source, at_capacity = report.efficiency(ramp, every_frame, top)
    assert (eff, source, at_capacity) == (0.99, ramp[2], True)
    # nothing at capacity: the every-frame run's figure, flagged
    eff, source, at_capacity = report.efficiency(ramp[:2], run(2, 30.0, 30.0), top)
    assert (eff, source["cameras"], at_capacity) == (0.75, 2, False)
    assert report.efficiency(ramp, None, None) == (None, None, False)
    # offered above published but nothing dropped: counter noise over a short window
    noisy = {**run(1, 5.0, 6.0), "drops": {}}
    assert not report.saturated(noisy)
