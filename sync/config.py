"""Configs of the sync stage: one frozen dataclass per component, validated on creation.

``[sync]`` is the trainer-side publisher, ``[serve]`` the reference serving replica (which
embeds the consumer library, configured by ``ConsumerConfig``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from streamtrain.config import check
from streamtrain.paths import STATE_DIR

DTYPES = ("fp32", "fp16")
FEATURES_START = ("window", "earliest")


@dataclass(frozen=True)
class PublisherConfig:
    """How and when the trainer's model goes to Kafka and to the dump directory."""

    model: str = "ctr"
    sparse_interval_s: float = 60.0
    dense_interval_s: float = 86400.0
    dtype: str = "fp32"
    max_message_bytes: int = 900_000  # under the broker's default 1 MiB message limit
    dense_chunk_bytes: int = 1_000_000
    dump_dir: str = str(STATE_DIR / "dumps")
    keep_dumps: int = 2
    dump_on_start: bool = True  # a replica needs a dump to bootstrap from
    # on restart, how far back (messages per partition) to look for this model's newest
    # delta past other models' and corrupt messages (never below the latest dump's offsets)
    recover_scan_messages: int = 100_000

    def __post_init__(self) -> None:
        check(bool(self.model) and "/" not in self.model, "sync.model", self.model,
              "a non-empty name without '/'")
        check(self.sparse_interval_s >= 0.1, "sync.sparse_interval_s", self.sparse_interval_s,
              ">= 0.1 seconds (default 60)")
        check(self.dense_interval_s >= self.sparse_interval_s, "sync.dense_interval_s",
              self.dense_interval_s, ">= sync.sparse_interval_s (default 86400)")
        check(self.dtype in DTYPES, "sync.dtype", self.dtype, f"one of {DTYPES}")
        check(self.max_message_bytes >= 4096, "sync.max_message_bytes", self.max_message_bytes,
              ">= 4096 bytes (and below the broker's max.message.bytes)")
        check(self.dense_chunk_bytes >= 1024, "sync.dense_chunk_bytes", self.dense_chunk_bytes,
              ">= 1024 bytes (and below model-dense's max.message.bytes, 8 MiB)")
        check(self.keep_dumps >= 1, "sync.keep_dumps", self.keep_dumps, ">= 1")
        check(self.recover_scan_messages >= 1, "sync.recover_scan_messages",
              self.recover_scan_messages, ">= 1 (default 100000)")


@dataclass(frozen=True)
class ConsumerConfig:
    """What one serving replica consumes. Each replica has its own consumer group, so every
    replica sees every update; ``shards`` () means all partitions of ``model-deltas``."""

    model: str = "ctr"
    dump_dir: str = str(STATE_DIR / "dumps")
    shards: tuple[int, ...] = ()
    group_id: str = ""  # "" -> serve-<model>-<random>: one group per replica
    max_poll_records: int = 2000
    require_dump: bool = True  # refuse to serve without a complete dump (no dense weights)
    # kafka-python verifies record CRC32C in pure Python unless the `crc32c` package is
    # installed (then it is cheap); without it, checking costs most of the apply time.
    check_crcs: bool = True

    def __post_init__(self) -> None:
        check(bool(self.model), "serve.model", self.model, "a non-empty model name")
        check(all(s >= 0 for s in self.shards), "serve.shards", self.shards,
              "partition numbers >= 0 of model-deltas, or empty for all")
        check(self.max_poll_records >= 1, "serve.max_poll_records", self.max_poll_records, ">= 1")
        if not self.group_id:
            object.__setattr__(self, "group_id", f"serve-{self.model}-{uuid.uuid4().hex[:8]}")


@dataclass(frozen=True)
class ReplicaConfig:
    """The reference serving replica (``streamtrain serve``): consumer + store + HTTP."""

    model: str = "ctr"
    dump_dir: str = str(STATE_DIR / "dumps")
    store_dir: str = ""  # "" -> a fresh directory under .streamtrain/replicas/
    shards: tuple[int, ...] = ()
    group_id: str = ""
    host: str = "127.0.0.1"
    port: int = 8500
    poll_interval_ms: int = 100
    max_batch: int = 4096
    max_poll_records: int = 2000
    max_body_bytes: int = 8 << 20  # a larger predict body is refused (413)
    workers: int = 4  # threads scoring requests (off the event loop)
    # torch intra-op threads of the serving process: requests are small, the workers give
    # the parallelism; 1 measured ~25% less CPU per request than torch's default on 2 cores
    torch_threads: int = 1
    # readiness (/ready, sync.health): 503 with the reason when any bound is exceeded
    ready_max_lag_records: int = 1000
    ready_max_version_age_s: float = 600.0  # 0 = no bound (e.g. a trainer that is stopped)
    ready_error_window_s: float = 30.0  # not ready this long after an apply error
    ready_lag_stale_s: float = 10.0  # lag not measured for this long: broker unreachable?
    # freshness (sync.freshness): end-to-end values kept for /status p50/p99, and a JSON-lines
    # file every observed trace is appended to ("" = none)
    freshness_keep: int = 10_000
    freshness_log: str = ""
    # request-time features (sync.request_features): instances with user_id/item_id get the
    # feature job's realtime values as of request time ([features] must match the job's)
    request_features: bool = True
    features_start: str = "window"  # a fresh store reads from: the largest window before now | earliest
    ready_max_features_lag_records: int = 1000  # job outputs not yet taken (/ready)

    def __post_init__(self) -> None:
        check(self.features_start in FEATURES_START, "serve.features_start", self.features_start,
              " | ".join(FEATURES_START))
        check(self.ready_max_features_lag_records >= 0, "serve.ready_max_features_lag_records",
              self.ready_max_features_lag_records, ">= 0")
        check(0 <= self.port <= 65535, "serve.port", self.port, "0..65535 (0 = any free port)")
        check(self.max_body_bytes >= 1024, "serve.max_body_bytes", self.max_body_bytes, ">= 1024")
        check(1 <= self.workers <= 256, "serve.workers", self.workers, "1..256")
        check(1 <= self.torch_threads <= 256, "serve.torch_threads", self.torch_threads, "1..256")
        check(self.ready_max_lag_records >= 0, "serve.ready_max_lag_records",
              self.ready_max_lag_records, ">= 0")
        check(self.ready_max_version_age_s >= 0, "serve.ready_max_version_age_s",
              self.ready_max_version_age_s, ">= 0 seconds (0 = no bound)")
        check(self.ready_error_window_s >= 0, "serve.ready_error_window_s",
              self.ready_error_window_s, ">= 0 seconds")
        check(self.ready_lag_stale_s > 0, "serve.ready_lag_stale_s", self.ready_lag_stale_s, "> 0 seconds")
        check(self.poll_interval_ms >= 1, "serve.poll_interval_ms", self.poll_interval_ms, ">= 1")
        check(self.max_batch >= 1, "serve.max_batch", self.max_batch, ">= 1")
        check(self.freshness_keep >= 1, "serve.freshness_keep", self.freshness_keep, ">= 1")
        check(self.max_poll_records >= 1, "serve.max_poll_records", self.max_poll_records, ">= 1")

    def consumer(self) -> ConsumerConfig:
        return ConsumerConfig(model=self.model, dump_dir=self.dump_dir, shards=self.shards,
                              group_id=self.group_id, max_poll_records=self.max_poll_records)
