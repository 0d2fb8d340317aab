"""``streamtrain kafka start|stop|status``, ``streamtrain topics create|list``, ``streamtrain jars``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from streamtrain import flags
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, admin_client, create_topics
from streamtrain.local_kafka import LocalKafka, LocalKafkaConfig, LocalKafkaError
from streamtrain.paths import REPO_ROOT


def kafka_main(argv: list[str]) -> int:
    p = flags.parser("kafka", "a local single-node Kafka broker (KRaft) from the Maven jars")
    p.add_argument("action", choices=["start", "stop", "status"])
    args = p.parse_args(argv)
    broker = LocalKafka(flags.load(args, LocalKafkaConfig, "local_kafka"))
    try:
        if args.action == "start":
            broker.start()
            print(f"kafka running at {broker.config.bootstrap} (data in {broker.config.data_dir})")
        elif args.action == "stop":
            print("kafka stopped" if broker.stop() else "kafka was not running")
        else:
            status = broker.status()
            print(json.dumps(status, indent=2))
            return 0 if status["running"] else 1
    except LocalKafkaError as exc:
        print(f"streamtrain kafka {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def topics_main(argv: list[str]) -> int:
    p = flags.parser("topics", "create or list the system's topics")
    p.add_argument("action", choices=["create", "list"])
    args = p.parse_args(argv)
    kafka = flags.load(args, KafkaConfig, "kafka")
    topics = flags.load(args, TopicsConfig, "topics")
    if args.action == "create":
        created = create_topics(kafka, topics)
        for name, parts, cfg in topics.specs():
            state = "created" if name in created else "exists"
            hours = int(cfg["retention.ms"]) // 3_600_000 if int(cfg["retention.ms"]) > 0 else "forever"
            print(f"{name:<16} partitions={parts:<3} retention_h={hours:<7} {state}")
        return 0
    admin = admin_client(kafka)
    try:
        for name in sorted(admin.list_topics()):
            if not name.startswith("__"):
                print(name)
    finally:
        admin.close()
    return 0


def jars_main(argv: list[str]) -> int:
    flags.parser("jars", "fetch the Kafka broker and Flink connector jars with Maven, and build "
                 "the jobs' JVM operators (jvm/flink-ops) with javac").parse_args(argv)
    mvn = shutil.which("mvn")
    if mvn is None:
        print("streamtrain jars: Maven (mvn) not found; install it (apt install maven)", file=sys.stderr)
        return 1
    rc = subprocess.call([mvn, "-q", "-B", "-f", str(REPO_ROOT / "infra" / "pom.xml"), "package"])
    if rc == 0:
        from streaming.jvm_ops import ops_jar

        jar = ops_jar()
        print(f"jvm ops: {jar}" if jar else "jvm ops: not built (no JDK): the jobs key in Python")
    return rc
