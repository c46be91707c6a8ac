"""deploy/prometheus: the alert rules and the scrape config name metrics barrierflow really exports."""

from __future__ import annotations

import re
from pathlib import Path

import fakeredis
import yaml
from prometheus_client import REGISTRY

import barrierflow.broker.metrics as metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def exported_sample_names() -> set[str]:
    """Every sample name barrierflow's metrics can have (DESIGN.md §6), from the metric objects themselves."""
    names: set[str] = set()
    families = [family for family in REGISTRY.collect() if family.name.startswith("barrierflow_")]
    families += list(metrics.QueueCollector(fakeredis.FakeRedis(), "bftest:rq:ready").collect())
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    for family in families:
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def test_the_contract_metric_names_are_exported() -> None:
    assert {
        "barrierflow_runs_total",
        "barrierflow_queue_depth",
        "barrierflow_queue_oldest_age_seconds",
        "barrierflow_runs_in_flight",
        "barrierflow_superstep_duration_seconds_bucket",
        "barrierflow_checkpoint_bytes_bucket",
        "barrierflow_deliveries_total",
        "barrierflow_retries_total",
        "barrierflow_lease_takeovers_total",
    } <= exported_sample_names()


def test_alert_rules_use_exported_metrics_only() -> None:
    rules = [
        rule
        for group in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]
    assert {rule["alert"] for rule in rules} >= {
        "BarrierflowQueueBacklog",
        "BarrierflowRunsFailing",
        "BarrierflowLeaseTakeovers",
    }
    exported = exported_sample_names()
    for rule in rules:
        used = set(re.findall(r"\bbarrierflow_[a-z_]+", rule["expr"]))
        assert used or 'up{job="barrierflow-' in rule["expr"], rule["alert"]
        assert used <= exported, f"{rule['alert']} uses {sorted(used - exported)}"
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
