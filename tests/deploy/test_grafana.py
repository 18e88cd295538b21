"""deploy/compose/grafana: the dashboard loads in Grafana's file-provisioning format and every
PromQL expression in it parses and names only metrics that pipeline/metrics.py defines (read from
a real registry: `Metrics` in single-process mode, with the suffixes Prometheus exposes); the
provisioning YAMLs point at the compose Prometheus and at where compose.yaml mounts the JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose"
GRAFANA = COMPOSE / "grafana"

# Grafana replaces these before the query reaches Prometheus; the test does the same.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$camera": ".*"}
LABEL_VALUES = re.compile(r"^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*\w+\s*\)$")


def _dashboard() -> dict[str, Any]:
    return json.loads((GRAFANA / "edgestream.json").read_text())


def _datasource_uid() -> str:
    (ds,) = yaml.safe_load((GRAFANA / "datasources.yaml").read_text())["datasources"]
    return str(ds["uid"])


def _exposed_names(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every sample name a scrape of `Metrics` can contain (counters: _total and _created;
    histograms: _bucket, _count, _sum, _created; gauges: the name)."""
    from prometheus_client import CollectorRegistry, values

    from pipeline import metrics

    monkeypatch.delenv(metrics.ENV_DIR, raising=False)  # single-process mode
    monkeypatch.setattr(values, "ValueClass", values.get_value_class())
    registry = CollectorRegistry()
    m = metrics.Metrics(registry)
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                "histogram": ("_bucket", "_count", "_sum", "_created")}  # fmt: skip
    names = set()
    for family in registry.collect():
        names.update(family.name + s for s in suffixes[family.type])
    # the same names as real samples, once every labelled family has a child
    m.published("cam", 1.0, 1.2)
    m.dropped("cam", "detect", "superseded")
    m.camera_state("cam", "streaming")
    m.batch(4)
    m.stage_latency("detect", 0.01)
    m.restart("detect")
    m.sync_redis({"published": 1, "events_published": 1, "dropped": {"buffer_full": 1},
                  "reconnects": 1, "connected": True})  # fmt: skip
    m.sync_counter(m.edge_auth_refused_total, ("items",), 1)
    m.line_crossed("cam", "door", "in", "person")
    m.zone_occupancy("cam", "lobby", "person", 1)
    sampled = {s.name for family in registry.collect() for s in family.samples}
    assert sampled <= names and sampled >= {n for n in names if not n.endswith("_created")}
    return names


def _exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def _metric_names(expr: str) -> set[str]:
    import promql_parser

    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            found.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_dashboard_has_the_provisioning_schema_keys() -> None:
    dash = _dashboard()
    assert dash["uid"] == "edgestream" and dash["title"]
    assert isinstance(dash["schemaVersion"], int) and dash.get("id") is None
    assert dash["panels"]
    uid = _datasource_uid()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["type"] in {"timeseries", "stat"} and p["title"], p
        grid = p["gridPos"]
        assert set(grid) == {"x", "y", "w", "h"} and grid["x"] + grid["w"] <= 24
        assert p["targets"], p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": uid}
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"] and t["datasource"]["uid"] == uid
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
    for var in dash["templating"]["list"]:
        assert var["datasource"]["uid"] == uid


def test_every_expr_names_only_metrics_that_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    defined = _exposed_names(monkeypatch)
    used: set[str] = set()
    for title, expr in _exprs(_dashboard()):
        names = _metric_names(expr)
        assert names, f"{title}: {expr!r} names no metric"
        assert names <= defined, f"{title}: {sorted(names - defined)} not in pipeline/metrics.py"
        used |= names
    for var in _dashboard()["templating"]["list"]:
        m = LABEL_VALUES.match(var["query"]["query"])
        assert m and m.group(1) in defined, var["query"]
    # what the dashboard is for: each of these families has a panel
    for name in ("edgestream_frames_total", "edgestream_frames_dropped_total",
                 "edgestream_e2e_latency_seconds_bucket", "edgestream_batch_size_bucket",
                 "edgestream_process_restarts_total", "edgestream_camera_up",
                 "edgestream_redis_connected", "edgestream_redis_dropped_total"):  # fmt: skip
        assert name in used, name


def test_a_wrong_metric_name_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    defined = _exposed_names(monkeypatch)
    assert "edgestream_frames_published_total" not in defined
    wrong = 'sum by (camera) (rate(edgestream_frames_published_total{camera=~"$camera"}[1m]))'
    assert _metric_names(wrong) == {"edgestream_frames_published_total"}
    fallback = "sum(increase(edgestream_process_restarts_total[$__range])) or vector(0)"
    assert _metric_names(fallback) == {"edgestream_process_restarts_total"}


def test_provisioning_files_point_at_prometheus_and_the_mounted_dashboard() -> None:
    (ds,) = yaml.safe_load((GRAFANA / "datasources.yaml").read_text())["datasources"]
    assert ds["type"] == "prometheus" and ds["access"] == "proxy"
    assert ds["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((GRAFANA / "dashboards.yaml").read_text())["providers"]
    assert provider["type"] == "file"
    dash_dir = PurePosixPath(provider["options"]["path"])

    spec = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    grafana = spec["services"]["grafana"]
    assert grafana["profiles"] == ["monitoring"]
    assert spec["services"]["prometheus"]["profiles"] == ["monitoring"]
    mounts = {}
    for volume in grafana["volumes"]:
        src, dst, *mode = volume.split(":")
        if src.startswith("./"):
            assert mode == ["ro"], volume  # provisioning is mounted read-only
            assert (COMPOSE / src).is_file(), volume
            mounts[PurePosixPath(dst)] = src
    assert mounts[dash_dir / "edgestream.json"] == "./grafana/edgestream.json"
    provisioning = PurePosixPath("/etc/grafana/provisioning")
    by_folder = {(dst.parent, src) for dst, src in mounts.items()}
    assert (provisioning / "datasources", "./grafana/datasources.yaml") in by_folder
    assert (provisioning / "dashboards", "./grafana/dashboards.yaml") in by_folder
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert PurePosixPath(home) == dash_dir / "edgestream.json"
    # the datasource's host is the compose Prometheus, which scrapes edgestream
    prom = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["edgestream:9752"]
