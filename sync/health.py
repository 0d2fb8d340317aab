"""Liveness and readiness of a serving replica, as a load balancer or Kubernetes reads them.

Liveness (``/health``) says the process answers and its apply thread runs. Readiness
(``/ready``) says it should take traffic: it has bootstrapped (dense weights), its lag is
measured recently and within bounds, its model version is not too old, applying has
not failed lately, and (request-time features on) the feature history's lag behind the
feature job's outputs is measured and within bounds. Each failed condition is one reason, so a 503 says what to fix.

>>> from sync.config import ReplicaConfig
>>> cfg = ReplicaConfig(ready_max_lag_records=100, ready_max_version_age_s=600)
>>> state = ReplicaState(bootstrapped=True, version=7, lag_records=5, lag_age_s=0.4,
...                      version_age_s=30.0, last_apply_error_age_s=None, last_apply_error="")
>>> readiness(state, cfg)
[]
>>> late = ReplicaState(True, 7, 5000, 0.4, 900.0, 2.0, "KafkaTimeoutError()")
>>> readiness(late, cfg)  # doctest: +NORMALIZE_WHITESPACE
['lag 5000 records > serve.ready_max_lag_records=100',
 'version 7 is 900 s old > serve.ready_max_version_age_s=600',
 'apply failed 2 s ago (< serve.ready_error_window_s=30): KafkaTimeoutError()']
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.config import ReplicaConfig


@dataclass(frozen=True)
class ReplicaState:
    """What readiness is judged on, read from a replica at one moment."""

    bootstrapped: bool  # dense weights loaded
    version: int | None  # sparse version visible to readers
    lag_records: int  # -1 until measured
    lag_age_s: float | None  # seconds since the lag was measured (None: never)
    version_age_s: float | None  # now - the version's creation time at the trainer
    last_apply_error_age_s: float | None  # seconds since the last apply error (None: never)
    last_apply_error: str
    features_lag_records: int | None = None  # request-time features: -1 unmeasured, None off


def readiness(state: ReplicaState, config: ReplicaConfig) -> list[str]:
    """Why the replica should not take traffic; empty when it should."""
    reasons = []
    if not state.bootstrapped:
        reasons.append("not bootstrapped: no dense weights yet (waiting for a dump or model-dense)")
    if state.lag_age_s is None or state.lag_records < 0:
        reasons.append("lag not measured yet")
    elif state.lag_age_s > config.ready_lag_stale_s:
        reasons.append(f"lag last measured {state.lag_age_s:.0f} s ago > serve.ready_lag_stale_s="
                       f"{config.ready_lag_stale_s:g} (broker unreachable?)")
    elif state.lag_records > config.ready_max_lag_records:
        reasons.append(f"lag {state.lag_records} records > serve.ready_max_lag_records="
                       f"{config.ready_max_lag_records}")
    age = state.version_age_s
    if config.ready_max_version_age_s > 0 and age is not None and age > config.ready_max_version_age_s:
        reasons.append(f"version {state.version} is {age:.0f} s old > serve.ready_max_version_age_s="
                       f"{config.ready_max_version_age_s:g}")
    flag = state.features_lag_records
    if flag is not None and flag < 0:
        reasons.append("request features: lag not measured yet")
    elif flag is not None and flag > config.ready_max_features_lag_records:
        reasons.append(f"request features: lag {flag} records > serve.ready_max_features_lag_records="
                       f"{config.ready_max_features_lag_records}")
    err_age = state.last_apply_error_age_s
    if err_age is not None and err_age < config.ready_error_window_s:
        reasons.append(f"apply failed {err_age:.0f} s ago (< serve.ready_error_window_s="
                       f"{config.ready_error_window_s:g}): {state.last_apply_error}")
    return reasons
