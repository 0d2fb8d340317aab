"""The model-delta topics are readable from another language: the Java reference consumer
(jvm/delta-reader: Apache Avro's Java library + the Kafka client) reads model-deltas and
model-dense of a live trainer -> publisher run, resolves writer schemas by fingerprint from
schemas/avro/, and ends with exactly the rows the Python replica holds at that version."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sync.config import PublisherConfig, ReplicaConfig
from sync.publisher import ModelPublisher
from sync.replica import ServingReplica
from trainer.batch import BatchBuilder
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.synthetic import SyntheticStream
from trainer.trainer import Trainer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "jvm" / "delta-reader"
MODEL = ModelConfig(slots=(0, 1, 2, 3), dim=8, dense_dim=2, hidden=(16,), seed=3)


@pytest.fixture(scope="session")
def delta_reader() -> list[str]:
    """The Java command, built by Maven (once per session; incremental)."""
    mvn, java = shutil.which("mvn"), shutil.which("java")
    if mvn is None or java is None:
        pytest.skip("needs a JDK and Maven (as the broker's jars do: README)")
    build = subprocess.run([mvn, "-q", "-B", "-f", str(PROJECT / "pom.xml"), "package"],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    cp = f"{PROJECT / 'target' / 'delta-reader.jar'}:{PROJECT / 'target' / 'lib'}/*"
    return [java, "-cp", cp, "streamtrain.ModelDeltaReader"]


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_java_reader_rows_equal_the_python_replicas(kafka_broker, topics, tmp_path, closing,
                                                    delta_reader, dtype):
    trainer = Trainer(MODEL, TableConfig(dim=8, expiry_ms=15_000),
                      TrainerConfig(batch_size=128, device="cpu", expire_every_batches=3))
    stream = SyntheticStream(num_slots=4, dense_dim=2, users=400, items=150, vocab=2000, seed=1)
    builder = BatchBuilder(MODEL)
    pub = closing(ModelPublisher(PublisherConfig(model="ctr", sparse_interval_s=1, dtype=dtype,
                                                 dump_dir=str(tmp_path / "dumps")), kafka_broker, topics, trainer))
    trainer.train_batch(builder.build(stream.take(128)))
    pub.tick(now_s=0.0)  # dump + dense at version 1
    tombstones = 0
    for k in range(6):
        for _ in range(2):
            trainer.train_batch(builder.build(stream.take(128)))
        tombstones += pub.tick(now_s=k + 1.0).tombstones
    pub.publish_dense()
    assert tombstones > 0, "expiry should have evicted some ids"

    replica = closing(ServingReplica(ReplicaConfig(model="ctr", dump_dir=str(tmp_path / "dumps"),
                                                   store_dir=str(tmp_path / "replica"), poll_interval_ms=20),
                                     kafka_broker, topics))
    replica.start()
    assert replica.wait_caught_up(min_version=pub.version)

    out = tmp_path / "java.json"
    run = subprocess.run([*delta_reader, "-bootstrap", kafka_broker.bootstrap, "-deltas", topics.model_deltas,
                          "-dense", topics.model_dense, "-model", "ctr", "-schemas", str(ROOT / "schemas" / "avro"),
                          "-out", str(out), "-timeout-ms", "60000"], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    java = json.loads(out.read_text())

    assert java["version"] == pub.version == replica.consumer.applier.version
    assert java["gaps"] == [] and java["undecodable"] == 0
    assert java["dense_versions"] == [1, pub.version]
    # the replica bootstrapped from the dump (fp32) and applied deltas after it; the reader
    # read only deltas, whose first push holds every row: in fp16 it holds them rounded
    wire = np.float16 if dtype == "fp16" else np.float32
    held = {i: np.asarray(row, np.float32).astype(wire).astype(np.float32).view(np.uint32)
            for i, row in replica.store.rows("emb")}
    java_rows = {int(i): np.array([int(x, 16) for x in bits.split(",")], np.uint32)
                 for i, bits in java["rows"]["emb"].items()}
    assert sorted(java_rows) == sorted(held)  # same live ids, evicted ones gone on both
    differ = [(i, java_rows[i], held[i]) for i in held if not np.array_equal(java_rows[i], held[i])]
    assert not differ, f"{len(differ)} rows differ, e.g. {differ[:2]}"  # bit for bit
