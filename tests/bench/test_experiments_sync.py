"""bench.experiments_sync.by_minute_of_hour: served calibration per 10-minute part of the clock hour."""

from __future__ import annotations

import numpy as np

from bench.experiments_sync import by_minute_of_hour

HOUR = 3_600_000


def test_by_minute_of_hour_splits_on_the_clock_hour_not_the_stream_start():
    # impressions at minutes 5 and 15 of two clock hours, the stream starting at minute 13
    t = np.array([5, 15, 65, 75, 75]) * 60_000 + 7 * HOUR
    p = np.array([[0.8, 0.1], [0.3, 0.1], [0.4, 0.1], [0.2, 0.1], [0.2, 0.1]])
    y = np.array([[1, 0], [1, 0], [1, 1], [0, 0], [1, 0]], float)
    got = by_minute_of_hour(p, y, t, ("conversion", "click"))
    assert got["conversion"]["0-10"] == round((0.8 + 0.4) / 2, 3)
    assert got["conversion"]["10-20"] == round((0.3 + 0.2 + 0.2) / 2, 3)
    assert got["conversion"]["20-30"] is None  # no impression there
    assert got["click"]["0-10"] == 0.2 and got["click"]["10-20"] is None  # no positive there
