"""Request-time features end to end: generator traffic -> the feature job (MiniCluster) ->
a serving replica tailing the job's outputs. For every enriched impression, the replica's
completion of what a caller sends (user, item, the generator's base slots/ids/dense) at the
impression's time equals what the job attached; /predict completes at now."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from schemas import Action, Impression, Sample, codec_for
from streaming.features.spec import FeatureSpec
from streamtrain.kafka_io import read_all
from sync.app import make_app
from sync.config import PublisherConfig, ReplicaConfig
from sync.publisher import ModelPublisher
from sync.replica import ServingReplica
from sync.server import ReplicaServer
from tests.helpers.joiner_jobs import features_command, run_join, wait_for
from traffic.generator import SLOTS, GeneratorConfig, TrafficGenerator
from traffic.producer import produce
from trainer import trainer as trainer_mod
from trainer.batch import BatchBuilder
from trainer.config import ModelConfig, TableConfig, TrainerConfig

pytestmark = pytest.mark.integration
SPEC = FeatureSpec()  # the job's defaults: 5 m / 1 h / 1 d, click/like/conversion, slot 100
BASE_DENSE = 3
MODEL = ModelConfig(slots=(*range(len(SLOTS)), SPEC.last_n_slot), dim=8,
                    dense_dim=BASE_DENSE + SPEC.dense_width(), hidden=(16,), seed=3)


def _decode(kafka, topic, record_type):
    codec = codec_for(record_type)
    return [codec.decode(r.value) for r in read_all(kafka, topic, timeout_s=90)]


def _base(imp: Impression) -> dict:
    """What the closed-loop traffic source sends for this impression."""
    n = len(SLOTS)
    return {"user_id": imp.user_id, "item_id": imp.item_id, "slots": imp.slots[:n], "ids": imp.ids[:n],
            "dense": imp.dense[:BASE_DENSE]}


def _post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_replica_completes_requests_exactly_as_the_feature_job_enriched_them(kafka_broker, topics, tmp_path):
    gen = TrafficGenerator(GeneratorConfig(seed=11, duration_s=40, impressions_per_s=25, duplicate_rate=0.03,
                                           out_of_order_rate=0.05, start_ms=1_700_000_000_000))
    produce(gen.events(), kafka_broker, topics)
    # every out-of-order event within the job's bound (generator: up to 30 s late), so the
    # job's values are complete: the replica's (all events before t) must equal them
    run_join(features_command(kafka_broker, topics, "flink.out_of_orderness_ms=40000"), timeout_s=400)
    enriched = _decode(kafka_broker, topics.impressions_enriched, Impression)
    deduped = _decode(kafka_broker, topics.actions_deduped, Action)
    assert len(enriched) == gen.stats["impressions"] > 500 and deduped

    # a model for the full features (trained on a few enriched impressions), dumped
    trainer = trainer_mod.Trainer(MODEL, TableConfig(dim=8), TrainerConfig(batch_size=128, device="cpu"))
    samples = [Sample(i.request_id, i.user_id, i.item_id, i.event_time_ms, i.event_time_ms, i.slots, i.ids,
                      i.dense) for i in enriched[:128]]
    trainer.train_batch(BatchBuilder(MODEL).build(samples))
    ModelPublisher(PublisherConfig(model="ctr", dump_dir=str(tmp_path / "dumps")), kafka_broker, topics,
                   trainer).tick(now_s=0.0)

    cfg = ReplicaConfig(model="ctr", dump_dir=str(tmp_path / "dumps"), store_dir=str(tmp_path / "replica"),
                        port=0, poll_interval_ms=20, features_start="earliest")
    replica = ServingReplica(cfg, kafka_broker, topics, SPEC)
    server = None
    try:
        replica.start()
        feats = replica.features
        assert feats is not None
        wait_for("the replica's history to take every job output",
                 lambda: feats.store.applied == len(enriched) + len(deduped) and feats.lag_records == 0, 90)

        # exactly what the job attached, at each impression's time
        with_last_n = 0
        for imp in enriched:
            got = replica.complete(_base(imp), imp.event_time_ms)
            assert np.array_equal(np.float32(got["dense"]), np.float32(imp.dense)), imp.request_id
            assert (got["slots"], got["ids"]) == (imp.slots, imp.ids), imp.request_id
            with_last_n += SPEC.last_n_slot in imp.slots
        assert with_last_n > 10  # the last-N path is exercised, not only counts
        stats = replica.metrics()
        assert stats["feature_lookups"] == 2 * len(enriched) and stats["feature_completions"] == len(enriched)
        assert stats["feature_misses"] == 0  # each impression's user and item were seen (its own event)

        # over HTTP: base instances are completed (as of now), full ones scored as sent
        server = ReplicaServer(make_app(replica), "127.0.0.1", 0)
        server.start()
        base = [_base(i) for i in enriched[:5]]
        code, answer = _post(server.port, {"instances": base})
        assert code == 200 and len(answer["predictions"]) == 5, answer
        full = [{"slots": i.slots, "ids": i.ids, "dense": i.dense} for i in enriched[:5]]
        assert _post(server.port, {"instances": full})[0] == 200
        unseen = _base(enriched[0]) | {"user_id": 10**12, "item_id": 10**12}
        assert _post(server.port, {"instances": [unseen]})[0] == 200
        assert replica.metrics()["feature_misses"] == 2
        code, err = _post(server.port, {"instances": [_base(enriched[0]) | {"dense": [0.0]}]})
        assert code == 400 and "dense has 1 values" in err["error"]
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert 'streamtrain_replica_feature_lookups_total{model="ctr"}' in text
        assert 'streamtrain_replica_features_lag_records{model="ctr"} 0.0' in text
        assert replica.state().features_lag_records == 0
    finally:
        if server is not None:
            server.close()
        replica.close()
