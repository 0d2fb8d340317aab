"""The engine-free join core over the generator's events of one hour vs of ``--days``
(same impression count), in one process: events per CPU second of each, and their ratio.
The Flink job's long-span slowdown showed here first (KvFallback.purge, docs/joiner.md).

    python -m bench.joiner_span [--impressions 20000] [--days 180]

Writes bench/results/joiner_span.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from bench.common import write_result
from schemas import Action, Impression, codec_for
from streaming.joiner import END_OF_TIME, JoinCore, JoinerConfig
from traffic.generator import GeneratorConfig, TrafficGenerator


def run(impressions: int, seconds: float) -> dict:
    ci, ca = codec_for(Impression), codec_for(Action)
    gen = TrafficGenerator(GeneratorConfig(seed=1, duration_s=seconds, malformed_rate=0.0,
                                           impressions_per_s=impressions / seconds),
                           now_ms=1_760_000_000_000)
    events = [(e.topic, (ci if e.topic == "impressions" else ca).decode(e.value),
               e.timestamp_ms) for e in gen.events()]
    with tempfile.TemporaryDirectory() as tmp:
        core = JoinCore(JoinerConfig(window_ms=10_000, kv_path=f"{tmp}/kv", stall_policy="off"))
        wm = 0
        t0 = time.process_time()
        for k, (topic, rec, ts) in enumerate(events):
            wm = max(wm, ts - 5000)  # a watermark 5 s behind the newest event
            if topic == "impressions":
                core.on_impression(rec, wm)
            else:
                core.on_action(rec, wm)
            if k % 20 == 0:
                core.advance(wm)
        core.advance(END_OF_TIME)
        cpu = time.process_time() - t0
        m = core.metrics
        core.close()
    return {"span_s": seconds, "events": len(events), "cpu_s": round(cpu, 3),
            "events_per_cpu_s": round(len(events) / cpu), "late_corrections": m.late_corrections}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impressions", type=int, default=20_000)
    p.add_argument("--days", type=float, default=180.0)
    args = p.parse_args()
    hour = run(args.impressions, 3600.0)
    long = run(args.impressions, args.days * 86400)
    ratio = long["events_per_cpu_s"] / hour["events_per_cpu_s"]
    print(f"core, 1 h span: {hour['events_per_cpu_s']:,} events per CPU s; {args.days:g}-day "
          f"span: {long['events_per_cpu_s']:,}; long / hour = {ratio:.2f}")
    print("wrote", write_result("joiner_span", {"impressions": args.impressions, "hour": hour,
                                                "long": long, "long_over_hour": round(ratio, 3)}))


if __name__ == "__main__":
    main()
