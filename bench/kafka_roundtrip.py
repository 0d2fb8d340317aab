"""Kafka round trip of Sample records: produce with kafka-python + the codec, consume and
decode. The same bytes moved without the codec run in the same process as the baseline, so
the codec's share of the cost is a ratio, not a guess.

    python -m bench.kafka_roundtrip [--records 100000] [--bootstrap host:port]
"""

from __future__ import annotations

import argparse
import random
import time
import uuid

from bench.common import kafka_for_bench, write_result
from schemas import Sample, codec_for
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, create_topics, make_consumer, make_producer

SLOTS = 26


def _labels(rng: random.Random) -> tuple[list[str], list[int]]:
    return (["click"], [rng.randrange(1000, 60_000)]) if rng.random() < 0.05 else ([], [])


def make_samples(n: int, seed: int = 1) -> list[Sample]:
    rng = random.Random(seed)
    return [Sample(f"req-{i}", rng.randrange(1, 10**6), rng.randrange(1, 10**5), 1_700_000_000_000 + i,
                   1_700_000_600_000 + i, list(range(SLOTS)),
                   [rng.getrandbits(63) for _ in range(SLOTS)], [rng.random() for _ in range(4)],
                   *_labels(rng), 1.0, 1.0, 0)
            for i in range(n)]


def produce(kafka: KafkaConfig, topic: str, payloads: list[bytes]) -> float:
    producer = make_producer(kafka, acks=1, linger_ms=20)
    t0 = time.perf_counter()
    for p in payloads:
        producer.send(topic, value=p)
    producer.flush()
    elapsed = time.perf_counter() - t0
    producer.close()
    return elapsed


def consume(kafka: KafkaConfig, topic: str, n: int, decode) -> float:
    consumer = make_consumer(kafka, topic, group_id=f"bench-{uuid.uuid4().hex[:6]}")
    got = 0
    t0 = time.perf_counter()
    while got < n:
        for recs in consumer.poll(timeout_ms=500, max_records=5000).values():
            if decode is not None:
                for r in recs:
                    decode(r.value)
            got += len(recs)
    elapsed = time.perf_counter() - t0
    consumer.close()
    return elapsed


def run(kafka: KafkaConfig, n: int) -> dict:
    codec = codec_for(Sample)
    samples = make_samples(n)
    t0 = time.perf_counter()
    payloads = [codec.encode(s) for s in samples]
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in payloads:
        codec.decode(p)
    decode_s = time.perf_counter() - t0
    mb = sum(map(len, payloads)) / 1e6
    suffix = uuid.uuid4().hex[:6]
    raw_topic, codec_topic = f"bench-raw-{suffix}", f"bench-codec-{suffix}"
    topics = TopicsConfig().suffixed(f"bench-{suffix}")
    create_topics(kafka, topics, extra=[raw_topic, codec_topic])
    # baseline: the same bytes, no codec
    raw_prod = produce(kafka, raw_topic, payloads)
    raw_cons = consume(kafka, raw_topic, n, None)
    # with the codec on both sides
    t0 = time.perf_counter()
    codec_prod = produce(kafka, codec_topic, [codec.encode(s) for s in samples])
    codec_prod = time.perf_counter() - t0
    codec_cons = consume(kafka, codec_topic, n, codec.decode)
    return {
        "records": n, "slots": SLOTS, "bytes_per_record": round(mb * 1e6 / n, 1),
        "codec_only": {"encode_per_s": round(n / encode_s), "decode_per_s": round(n / decode_s)},
        "baseline_raw_bytes": {"produce_msgs_per_s": round(n / raw_prod),
                               "consume_msgs_per_s": round(n / raw_cons),
                               "produce_mb_per_s": round(mb / raw_prod, 1),
                               "consume_mb_per_s": round(mb / raw_cons, 1)},
        "with_codec": {"produce_msgs_per_s": round(n / codec_prod), "consume_msgs_per_s": round(n / codec_cons),
                       "produce_mb_per_s": round(mb / codec_prod, 1), "consume_mb_per_s": round(mb / codec_cons, 1),
                       "roundtrip_msgs_per_s": round(n / (codec_prod + codec_cons))},
        "ratio_codec_vs_raw": {"produce": round(raw_prod / codec_prod, 2), "consume": round(raw_cons / codec_cons, 2)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--bootstrap", help="an existing broker; default: start a local one")
    args = p.parse_args(argv)
    with kafka_for_bench(args.bootstrap) as kafka:
        result = run(kafka, args.records)
    for section, values in result.items():
        print(f"{section:>20}: {values}")
    print(f"written to {write_result('kafka_roundtrip', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
