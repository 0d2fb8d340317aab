"""``streamtrain generate`` and ``streamtrain replay``.

Replay reads ``[kafka]``, ``[topics]`` and ``[validation]`` (the limits the streaming jobs
apply); it refuses a log the jobs would mostly reject (exit code 2, overridable with
``--force``) and warns when a notable share of it would go to the dead-letter topic."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from schemas.validation import ValidationLimits
from streamtrain import clock, flags
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, create_topics
from streamtrain.paths import SHARED_DATA_DIR
from traffic.generator import GeneratorConfig, TrafficGenerator
from traffic.producer import produce, produce_dead_letters
from traffic.replay import REFUSE_FRACTION, WARN_FRACTION, ReplayPlan, dead_letter_check

log = logging.getLogger(__name__)


def _write_stats(path: str | None, stats: dict) -> None:
    text = json.dumps(stats, indent=2, sort_keys=True)
    print(text)
    if path:
        Path(path).write_text(text + "\n")


def generate_main(argv: list[str]) -> int:
    p = flags.parser("generate", "synthetic impressions and delayed actions to Kafka "
                          "(settings: [generator] section, e.g. --set generator.duration_s=60)")
    p.add_argument("--stats", help="write what was injected (counts) to this JSON file")
    args = p.parse_args(argv)
    kafka = flags.load(args, KafkaConfig, "kafka")
    topics = flags.load(args, TopicsConfig, "topics")
    cfg = flags.load(args, GeneratorConfig, "generator")
    create_topics(kafka, topics)
    gen = TrafficGenerator(cfg, now_ms=clock.now_ms())
    sent = produce(gen.events(), kafka, topics, speedup=cfg.speedup)
    _write_stats(args.stats, {"injected": dict(gen.stats), "sent": dict(sent)})
    return 0


def replay_main(argv: list[str]) -> int:
    p = flags.parser("replay", "a CSV event log to impressions/actions in event-time order")
    p.add_argument("mapping", help="mapping TOML, or a built-in name: talkingdata | taobao")
    p.add_argument("--data-dir", default=str(SHARED_DATA_DIR), help="where relative CSV paths point")
    p.add_argument("--speedup", type=float, default=0.0, help="event seconds per wall second (0: flat out)")
    p.add_argument("--stats", help="write counts to this JSON file")
    p.add_argument("--force", action="store_true",
                   help=f"replay even when more than {REFUSE_FRACTION:.0%} of the records would be dead letters")
    args = p.parse_args(argv)
    kafka = flags.load(args, KafkaConfig, "kafka")
    topics = flags.load(args, TopicsConfig, "topics")
    limits = flags.load(args, ValidationLimits, "validation")
    plan = ReplayPlan.from_file(args.mapping)
    events, dead, stats = plan.events(Path(args.data_dir), topic_name=str(plan.csv_path(Path(args.data_dir))))
    check = dead_letter_check(events, dead, limits, clock.now_ms())
    if check.fraction > REFUSE_FRACTION and not args.force:
        log.error("replay refused: %s. Fix the mapping, or the [validation] settings (the same for the "
                  "streaming jobs: put them in the --config file every command reads), or replay anyway "
                  "with --force", check.summary())
        return 2
    if check.fraction > WARN_FRACTION:
        log.warning("%s%s", "--force: " if check.fraction > REFUSE_FRACTION else "", check.summary())
    create_topics(kafka, topics)
    if events and topics.retention_hours > 0:
        age_h = (clock.now_ms() - events[0].timestamp_ms) / 3_600_000
        if age_h > topics.retention_hours:
            log.warning("the log starts %.0f h ago, beyond topics.retention_hours=%d: Kafka expires records "
                        "by their timestamp, so replayed records may be deleted within minutes; create the "
                        "topics with --set topics.retention_hours=-1 for replays", age_h, topics.retention_hours)
    produce_dead_letters(dead, kafka, topics)
    sent = produce(events, kafka, topics, speedup=args.speedup)
    _write_stats(args.stats, {"rows": dict(stats), "sent": dict(sent), "dead_letter_check": check.to_dict()})
    return 0
