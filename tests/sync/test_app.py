"""The replica's HTTP app (sync.app) on uvicorn (sync.server), over a replica without Kafka."""

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from sync.app import make_app
from sync.config import ReplicaConfig
from sync.health import ReplicaState
from sync.server import ReplicaServer
from tests.helpers.serving_fakes import MODEL, BlockingStore, OfflineReplica, instance, reference_scores


@pytest.fixture
def replica():
    r = OfflineReplica()
    r.commit(3, list(range(50)))
    return r


@pytest.fixture
def client(replica):
    with TestClient(make_app(replica), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def server(replica):
    s = ReplicaServer(make_app(replica), "127.0.0.1", 0)
    s.start()
    yield s
    s.close()


def _post(port, body, timeout=30):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def test_app_predicts_on_the_version_it_reports(client, replica):
    instances = [instance(k) for k in range(5)]
    r = client.post("/predict", json={"instances": instances})
    assert r.status_code == 200
    body = r.json()
    assert body["version"] == 3 and body["dense_version"] == 1 and body["model"] == "ctr"
    assert body["heads"] == list(MODEL.heads)
    np.testing.assert_allclose(body["predictions"], reference_scores(replica, instances), rtol=1e-6)


BAD = {
    "malformed json": (b'{"instances": [', 400, "malformed JSON"),
    "not an object": (b"[1, 2]", 400, "expected a JSON object"),
    "no instances": (b'{"inst": []}', 400, "expected a JSON object"),
    "empty batch": (b'{"instances": []}', 400, "non-empty"),
    "instances not a list": (b'{"instances": {"slots": [0]}}', 400, "non-empty list"),
    "instance not an object": (b'{"instances": [7]}', 400, "must be an object"),
    "missing ids": (b'{"instances": [{"slots": [0]}]}', 400, "needs slots and ids"),
    "slot count differs": (b'{"instances": [{"slots": [0, 1], "ids": [5], "dense": [0, 0]}]}', 400,
                           "differ in length"),
    "float id": (b'{"instances": [{"slots": [0], "ids": [1.5], "dense": [0, 0]}]}', 400, "64-bit integer"),
    "string id": (b'{"instances": [{"slots": [0], "ids": ["7"], "dense": [0, 0]}]}', 400, "64-bit integer"),
    "bool id": (b'{"instances": [{"slots": [0], "ids": [true], "dense": [0, 0]}]}', 400, "64-bit integer"),
    "id over 64 bits": (b'{"instances": [{"slots": [0], "ids": [18446744073709551616], "dense": [0, 0]}]}',
                        400, "64-bit integer"),
    "NaN dense": (b'{"instances": [{"slots": [0], "ids": [1], "dense": [NaN, 0]}]}', 400, "finite"),
    "dense of the wrong size": (b'{"instances": [{"slots": [0], "ids": [1], "dense": [0.5]}]}', 400,
                                "dense has 1 values"),
    "request_id not a string": (b'{"instances": [{"slots": [0], "ids": [1], "dense": [0, 0], "request_id": 3}]}',
                                400, "request_id"),
    "not utf-8": (b'\xff\xfe{', 400, "malformed JSON"),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, 400, "malformed JSON"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_app_answers_a_bad_request_with_4xx_and_a_message(client, name):
    body, status, message = BAD[name]
    r = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_app_refuses_a_huge_batch_with_400_and_a_huge_body_with_413(client, replica):
    r = client.post("/predict", json={"instances": [instance(0)] * 65})  # max_batch=64
    assert r.status_code == 400 and "serve.max_batch=64" in r.json()["error"]
    huge = b'{"instances": [' + b" " * (replica.config.max_body_bytes + 1) + b"]}"
    r = client.post("/predict", content=huge)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]


def test_app_answers_unknown_routes_and_methods_with_json_4xx(client):
    r = client.get("/nope")
    assert r.status_code == 404 and "routes:" in r.json()["error"]
    assert client.get("/predict").status_code == 405


def test_app_predict_is_503_until_bootstrapped():
    with TestClient(make_app(OfflineReplica(bootstrapped=False))) as c:
        r = c.post("/predict", json={"instances": [instance(0)]})
        assert r.status_code == 503 and "no dense weights" in r.json()["error"]
        ready = c.get("/ready")
        assert ready.status_code == 503 and any("not bootstrapped" in x for x in ready.json()["reasons"])


def test_app_ready_says_why_it_is_not(client, replica):
    assert client.get("/ready").json() == {"ready": True, "reasons": [], "version": 3, "lag_records": 0,
                                           "version_age_s": 1.0}
    replica.state = ReplicaState(True, 3, lag_records=5000, lag_age_s=0.2, version_age_s=700.0,
                                 last_apply_error_age_s=1.0, last_apply_error="KafkaError()")
    r = client.get("/ready")
    assert r.status_code == 503
    reasons = " | ".join(r.json()["reasons"])
    assert "lag 5000 records" in reasons and "700 s old" in reasons and "KafkaError()" in reasons
    replica.state = ReplicaState(True, 3, 0, lag_age_s=60.0, version_age_s=1.0,
                                 last_apply_error_age_s=31.0, last_apply_error="old")
    assert client.get("/ready").json()["reasons"] == [
        "lag last measured 60 s ago > serve.ready_lag_stale_s=10 (broker unreachable?)"]


def test_app_health_is_liveness(client, replica):
    assert client.get("/health").json() == {"status": "ok", "model": "ctr", "version": 3}
    replica.alive = False
    assert client.get("/health").status_code == 503


def test_app_metrics_are_prometheus_text_with_request_latency(client):
    assert client.post("/predict", json={"instances": [instance(0), instance(1)]}).status_code == 200
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    version = families["streamtrain_replica_version"].samples[0]
    assert version.value == 3 and version.labels == {"model": "ctr"}
    assert families["streamtrain_replica_ready"].samples[0].value == 1
    latency = families["streamtrain_replica_request_duration_seconds"]
    count = [s for s in latency.samples if s.name.endswith("_count") and s.labels["route"] == "/predict"]
    assert count and count[0].value == 1
    inst = families["streamtrain_replica_predict_instances"]
    assert [s.value for s in inst.samples if s.name.endswith("_sum")] == [2]


def test_app_answers_others_while_one_request_is_slow(server, replica):
    replica.gate = threading.Event()
    slow: dict = {}
    t = threading.Thread(target=lambda: slow.update(_post(server.port, {"instances": [
        instance(0) | {"request_id": "slow"}]})))
    t.start()
    assert replica.in_predict.wait(30)
    fast = _post(server.port, {"instances": [instance(1)]})  # answered while the slow one waits
    assert fast["version"] == 3 and not slow
    replica.gate.set()
    t.join(30)
    assert slow["version"] == 3


def test_app_predicts_while_a_version_is_being_written_to_the_store():
    store = BlockingStore()
    replica = OfflineReplica(store=store)
    replica.commit(4, list(range(50)))
    want = reference_scores(replica, [instance(2)])
    server = ReplicaServer(make_app(replica), "127.0.0.1", 0)
    server.start()
    flush = threading.Thread(target=replica.view.flush)
    try:
        flush.start()
        assert store.writing.wait(30)  # the apply thread is inside a (slow) store write
        answer = _post(server.port, {"instances": [instance(2)]})
        assert answer["version"] == 4
        np.testing.assert_allclose(answer["predictions"], want, rtol=1e-6)
    finally:
        store.release.set()
        flush.join(30)
        server.close()
    assert not replica.view.current().overlays  # the write finished after we were answered


def test_server_reports_a_port_in_use():
    first = ReplicaServer(make_app(OfflineReplica()), "127.0.0.1", 0)
    try:
        with pytest.raises(Exception, match="cannot listen"):
            ReplicaServer(make_app(OfflineReplica()), "127.0.0.1", first.port)
    finally:
        first.sock.close()


def test_replica_config_rejects_bad_serving_bounds():
    with pytest.raises(Exception, match="serve.workers"):
        ReplicaConfig(workers=0)
    with pytest.raises(Exception, match="serve.ready_max_version_age_s"):
        ReplicaConfig(ready_max_version_age_s=-1)


def test_app_status_is_json(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/status", timeout=10) as resp:
        assert json.loads(resp.read())["applied_version"] == 3
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/nope", timeout=10)
    assert err.value.code == 404
