"""The pure parts of ``streamtrain up``: reading Prometheus text, histogram quantiles, the
run report's checks and figures, the stack's stage commands and port persistence."""

from __future__ import annotations

import json
import math

import pytest

from streamtrain.cli.observe import _short, ending, histogram_quantile, value
from streamtrain.cli.run_report import RunReport
from streamtrain.cli.stack import STOP_ORDER, Stack, UpConfig
from streamtrain.config import ConfigError

HIST = {
    "streamtrain_replica_freshness_seconds_bucket": [
        ({"stage": "end_to_end", "le": "1.0"}, 10.0), ({"stage": "end_to_end", "le": "10.0"}, 90.0),
        ({"stage": "end_to_end", "le": "+Inf"}, 100.0), ({"stage": "join_wait", "le": "+Inf"}, 7.0)],
}


def test_histogram_quantile_interpolates_inside_the_bucket_like_promql():
    # rank 50 of 100 lies in (1, 10] which holds ranks 10..90: 1 + 9 * 40/80
    assert histogram_quantile(HIST, "streamtrain_replica_freshness_seconds", 0.5, stage="end_to_end") == \
        pytest.approx(5.5)
    assert histogram_quantile(HIST, "streamtrain_replica_freshness_seconds", 0.05, stage="end_to_end") == \
        pytest.approx(0.5)
    # above the last finite bucket: its upper edge (PromQL's answer)
    assert histogram_quantile(HIST, "streamtrain_replica_freshness_seconds", 0.99, stage="end_to_end") == 10.0
    assert histogram_quantile(HIST, "streamtrain_replica_freshness_seconds", 0.5, stage="nope") is None
    assert histogram_quantile(None, "x", 0.5) is None


def test_value_sums_matching_labels_and_skips_nan():
    s = {"m": [({"a": "1", "b": "x"}, 2.0), ({"a": "1", "b": "y"}, 3.0), ({"a": "2"}, math.nan)]}
    assert value(s, "m", a="1") == 5.0
    assert value(s, "m", a="2") is None and value(s, "other") is None and value(None, "m") is None
    flink = {"flink_taskmanager_job_task_operator_joiner_orphans": [({"subtask_index": "0"}, 4.0),
                                                                   ({"subtask_index": "1"}, 1.0)]}
    assert ending(flink, "joiner_orphans") == 5.0 and ending(flink, "joiner_late_corrections") is None


def test_dead_letter_reasons_are_grouped_without_their_details():
    assert _short("orphan action: request g7-12 never came") == "orphan action"
    assert _short("") == "?"


def _rows(n: int, auc: float, oracle_auc: float, ne: float, served: float, rnd: float) -> list[dict]:
    return [{"t": 1000.0 + 2 * i, "impressions_total": 600 * i, "samples_total": 500 * i,
             "served_model_click_auc": auc, "served_oracle_click_auc": oracle_auc, "served_model_click_ne": ne,
             "trained_samples": 500 * i,
             "served_ctr": served, "random_ctr": rnd, "oracle_ctr": 0.2, "trainer_lag": 10,
             "replicas": {"serve-0": {"version": i, "up": True}}} for i in range(n)]


def test_report_checks_say_whether_the_run_worked():
    stages = {"train": {"restarts": 0, "exit": 0, "rss_mb": [(float(t), 500.0) for t in range(12)]}}
    fresh = [{"end_to_end_s": 3.0 + i, "join_wait_s": 1.0, "sample_to_trained_s": 1.0,
              "trained_to_published_s": 0.5, "published_to_applied_s": 0.5 + i} for i in range(10)]
    good = RunReport(_rows(12, 0.75, 0.8, 0.95, 0.12, 0.08), fresh, stages, 300.0)
    checks = good.checks()
    assert checks["served model: click AUC at least 90% of the oracle's"] and checks["served model: click NE below 1"]
    assert checks["served CTR above random"] and checks["freshness traced"]
    assert checks["traffic at the target rate (within 5%)"]  # 600 per 2 s
    s = good.summary()
    assert s["freshness"]["end_to_end"]["p50_s"] == pytest.approx(7.5)
    assert s["rates"]["impressions"]["per_s"] == pytest.approx(300.0)
    assert s["stability"]["rss"]["train"]["end_mb"] == 500.0
    json.dumps(s)  # summary.json is plain JSON
    bad = RunReport(_rows(12, 0.6, 0.8, 1.1, 0.05, 0.08), [], stages, 1000.0).checks()
    assert not any(bad[k] for k in ("served model: click AUC at least 90% of the oracle's",
                                    "served model: click NE below 1",
                                    "served CTR above random", "freshness traced",
                                    "traffic at the target rate (within 5%)"))
    assert "[NO] served model: click NE below 1" in RunReport(_rows(12, 0.6, 0.8, 1.1, 0.05, 0.08), [], stages,
                                                 1000.0).verdict_text()


def test_report_plots_are_written(tmp_path):
    rows = _rows(8, 0.7, 0.8, 0.9, 0.1, 0.08)
    for r in rows:
        r.update(served_window_ctr=0.1, random_window_ctr=0.08, oracle_window_ctr=0.2)
    paths = RunReport(rows, [{"end_to_end_s": 2.0}], {}, 300.0).plots(tmp_path)
    assert {p.name for p in paths} == {"quality.png", "served_ctr.png", "freshness_cdf.png"}
    assert all(p.stat().st_size > 1000 for p in paths)


def test_stack_runs_every_stage_with_its_state_under_the_run_dir_and_keeps_its_ports(tmp_path):
    cfg = UpConfig(run_dir=str(tmp_path), replicas=2, window_ms=20_000)
    stack = Stack(cfg, ["--set", "trainer.window=500"])
    names = [s.name for s in stack.stages]
    assert names == ["features", "join", "train", "serve-0", "serve-1", "traffic"]
    assert all(any(s.name.startswith(p) for p in STOP_ORDER) for s in stack.stages)
    by = {s.name: " ".join(s.argv) for s in stack.stages}
    assert "--restore latest" in by["features"] and "--restore latest" in by["join"]
    assert "joiner.policy=early" in by["join"] and "joiner.window_ms=20000" in by["join"]
    assert f"topics.impressions={stack.topics.impressions_enriched}" in by["join"]
    assert str(tmp_path / "trainer-checkpoints") in by["train"] and "model.dense_dim=" in by["train"]
    urls = [f"http://127.0.0.1:{p}" for p in stack.ports.serve]
    assert f"live_traffic.replica_urls={','.join(urls)}" in by["traffic"]
    assert len(set(stack.ports.serve)) == 2
    stack.write_state(supervisor_pid=0)
    again = Stack(cfg)
    assert again.resumed and again.ports == stack.ports  # the next `up` on the directory keeps them
    assert not stack.resumed
    assert "--set trainer.window=500" in " ".join(stack._common())


def test_bad_up_settings_are_config_errors():
    with pytest.raises(ConfigError, match="up.replicas"):
        UpConfig(replicas=0)
    with pytest.raises(ConfigError, match="up.view"):
        UpConfig(view="fancy")  # type: ignore[arg-type]
