"""The Prometheus scrape config and the Grafana dashboard in infra/ refer only to metrics
docs/operations.md names (which the scrape test proves are exported)."""

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED = set(re.findall(r"`(streamtrain_(?:trainer|replica)_[a-z0-9_]+)`",
                            (ROOT / "docs" / "operations.md").read_text()))


def test_grafana_dashboard_uses_only_documented_metrics():
    dash = json.loads((ROOT / "infra" / "grafana" / "streamtrain-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs
            for m in re.findall(r"streamtrain_[a-z0-9_]+", e)}
    assert used and used <= DOCUMENTED, sorted(used - DOCUMENTED)
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_prometheus_config_scrapes_replica_and_trainer_ports_docs_name():
    cfg = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in cfg["scrape_configs"]}
    assert targets == {"streamtrain-replica": ["localhost:8500"], "streamtrain-trainer": ["localhost:9400"],
                       "streamtrain-flink": ["localhost:9250", "localhost:9251", "localhost:9260", "localhost:9261"]}
    ops = (ROOT / "docs" / "operations.md").read_text()
    assert "trainer.metrics_port=9400" in ops and "HOST:8500/metrics" in ops
