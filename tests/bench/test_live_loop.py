"""bench.live_loop on a short closed loop: the join core's timing reaches the trainer."""

from __future__ import annotations

from bench.live_loop import run


def test_live_loop_trains_what_the_early_joiner_emits_with_its_delays():
    out = run(impressions=6000, policy="early", window_ms=2000, seed=11, ooo_ms=1000, pipeline_ms=3000,
              max_wait_ms=1000, window=2000)
    # 20 s at 300/s: all but the last ~8 s (window, watermark, pipeline, batch wait) trained
    assert 6000 - 300 * 8 < out["trained"] < 6000 - 300 * 5
    waits = out["impression_to_trained_s"]
    # a negative waits for its window, the watermark and the pipeline; a positive only for its click
    assert waits["negative"] >= 2.0 + 1.0 + 3.0
    assert waits["positive"] < waits["negative"] + 5.0
    assert 0.0 < out["model"]["calibration"] and 0.5 < out["oracle"]["auc"] <= 1.0
