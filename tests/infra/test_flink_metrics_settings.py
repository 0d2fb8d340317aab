"""The Prometheus reporter settings of the Flink jobs (``flink.metrics_port``) and of the
session cluster (``flink_cluster.metrics_port``), without a JVM; the scrape of real jobs is
tests/streaming/test_flink_metrics.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.flink_env import PROMETHEUS_FACTORY, FlinkConfig, prometheus_jar, prometheus_settings
from streamtrain.cli.flink import FlinkCluster, FlinkClusterConfig
from streamtrain.config import ConfigError


def test_flink_metrics_port_off_by_default_and_checked():
    assert FlinkConfig().metrics_port == "0" and prometheus_settings("0") == {}
    assert prometheus_settings("9250-9259") == {"metrics.reporter.prom.factory.class": PROMETHEUS_FACTORY,
                                                "metrics.reporter.prom.port": "9250-9259"}
    with pytest.raises(ConfigError, match="flink.metrics_port"):
        FlinkConfig(metrics_port="92a0")
    with pytest.raises(ConfigError, match="flink_cluster.metrics_port"):
        FlinkClusterConfig(metrics_port="70000")


def test_flink_reporter_jar_ships_with_pyflink():
    jar = prometheus_jar()
    assert jar is not None and jar.is_file(), "pyflink/plugins/metrics-prometheus has no jar"


def test_flink_cluster_conf_turns_the_reporter_on_as_a_plugin(tmp_path):
    off = FlinkCluster(FlinkClusterConfig(dir=str(tmp_path / "off"))).flink_settings()
    assert not any(k.startswith("metrics.reporter.") for k in off)
    cluster = FlinkCluster(FlinkClusterConfig(dir=str(tmp_path / "on"), metrics_port="9260-9261"))
    conf = dict(line.split(": ", 1) for line in cluster.write_conf().read_text().splitlines()
                if not line.startswith("#"))
    assert conf["metrics.reporter.prom.factory.class"] == f'"{PROMETHEUS_FACTORY}"'
    assert conf["metrics.reporter.prom.port"] == '"9260-9261"'
    plugins = Path(cluster.env()["FLINK_PLUGINS_DIR"])
    assert list((plugins / "metrics-prometheus").glob("flink-metrics-prometheus-*.jar"))
