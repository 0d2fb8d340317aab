"""The feature job across a crash: run unbounded on a generator stream, SIGKILLed (no goodbye)
mid-stream after its first part went through a checkpoint, then started again with
``--restore latest`` on the rest of the stream. The dedup keys, the 24 h windows and the
pending impressions come back from the checkpoint, the sources resume from its offsets:

* every original impression and action comes out, and no injected duplicate does: neither
  the generator's nor copies of first-part records sent again after the crash (their
  originals are only in the restored dedup state);
* the enriched impressions carry the values of the independent pandas reference
  (``tests/helpers/features_reference.py``), i.e. those of an uninterrupted run;
* at least once: the only outputs written twice are those the killed run wrote after the
  restored checkpoint (the replayed epoch), and both copies carry the same values.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pytest

from schemas import Action, FeatureUpdate, Impression, codec_for
from streaming.features.spec import FeatureSpec
from streaming.flink_env import latest_checkpoint
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, read_all
from streamtrain.paths import REPO_ROOT
from tests.helpers import features_reference as reference
from tests.helpers.features_taobao import check_enriched
from tests.helpers.joiner_jobs import wait_for
from traffic.generator import Event, GeneratorConfig, TrafficGenerator
from traffic.producer import produce

pytestmark = pytest.mark.integration
DEDUP_TTL_MS = 3_600_000  # longer than the stream: a copy sent after the crash is still a duplicate
SPEC = FeatureSpec(dedup_ttl_ms=DEDUP_TTL_MS)
FLUSH, FLUSH_ID = "flush", 10**9  # the flush events' request and entity (none of the generator's)
ROLES = ("impressions_enriched", "actions_deduped", "features")


def features_command(kafka: KafkaConfig, topics: TopicsConfig, work: Path, *settings: str,
                     restore: str | None = None) -> list[str]:
    """`streamtrain features`, unbounded, checkpointing every 2 s into ``work/checkpoints``;
    no restart inside the job (a failure ends it)."""
    cmd = [sys.executable, "-m", "streamtrain.cli", "features",
           "--set", f"kafka.bootstrap={kafka.bootstrap}",
           "--set", f"features_job.checkpoint_dir={work / 'checkpoints'}",
           "--set", f"features_job.group_id=f-{topics.features}",
           "--set", "features_job.max_restarts=0",
           "--set", "flink.checkpoint_interval_ms=2000",
           "--set", f"features.dedup_ttl_ms={DEDUP_TTL_MS}"]
    for role in ("impressions", "actions", "features", "dead_letter", "impressions_enriched",
                 "actions_deduped"):
        cmd += ["--set", f"topics.{role}={getattr(topics, role)}"]
    for s in settings:
        cmd += ["--set", s]
    if restore:
        cmd += ["--restore", restore]
    return cmd


def _start(cmd: list[str], log_path: Path) -> subprocess.Popen:
    """The job in its own process group, its output in ``log_path`` (for a post-mortem)."""
    with open(log_path, "wb") as out:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the job's whole process group (the client and its JVM): a crash, no goodbye."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _checkpoints(work: Path) -> tuple[int, int]:
    """(newest checkpoint id triggered, newest completed), -1 where none: a ``chk-<n>``
    directory appears when checkpoint n is triggered, its ``_metadata`` when it completed."""
    def newest(paths) -> int:
        return max((int(p.name.split("-")[1]) for p in paths), default=-1)
    root = work / "checkpoints"
    return newest(root.glob("*/chk-*")), newest(p.parent for p in root.glob("*/chk-*/_metadata"))


def _key(rec):
    if isinstance(rec, Impression):
        return rec.request_id, rec.item_id
    if isinstance(rec, Action):
        return rec.request_id, rec.item_id, rec.action_type
    return rec.entity_type, rec.entity_id, rec.event_time_ms


def _outputs(kafka: KafkaConfig, topics: TopicsConfig) -> dict[str, list]:
    """Every record of the output topics (up to their end offsets now), flush records left out."""
    types = {"impressions_enriched": Impression, "actions_deduped": Action,
             "features": FeatureUpdate}
    out = {}
    for role, cls in types.items():
        codec = codec_for(cls)
        recs = [codec.decode(r.value) for r in read_all(kafka, getattr(topics, role), timeout_s=60)]
        out[role] = [r for r in recs if getattr(r, "request_id", "") != FLUSH
                     and getattr(r, "entity_id", 0) != FLUSH_ID]
    return out


def _flush(t_ms: int) -> list[Event]:
    """One event far ahead in event time on both topics (an entity of its own): the
    watermark passes every pending impression (idle partitions are skipped), as it would live."""
    imp = Impression(FLUSH, FLUSH_ID, FLUSH_ID, t_ms, [], [], [])
    act = Action(FLUSH, FLUSH_ID, FLUSH_ID, "click", t_ms)
    return [Event("impressions", b"flush", codec_for(Impression).encode(imp), t_ms, t_ms),
            Event("actions", b"flush", codec_for(Action).encode(act), t_ms, t_ms)]


def _decoded(ev: Event):
    return codec_for(Impression if ev.topic == "impressions" else Action).decode(ev.value)


def _reference_frame(events: list[Event]) -> pd.DataFrame:
    """The generator's events (duplicates included) as the reference's event table."""
    rows = []
    for ev in events:
        rec = _decoded(ev)
        kind = "pv" if isinstance(rec, Impression) else rec.action_type
        rows.append((kind, rec.user_id, rec.item_id, rec.event_time_ms, rec.request_id))
    return pd.DataFrame(rows, columns=["kind", "user", "item", "t", "request_id"])


def _check_at_least_once(role: str, final: list, before: list, settled: set) -> dict:
    """Outputs by key: a key comes out once, or twice when the killed run wrote it and the
    restored run wrote it again (the replayed epoch: never an output that was in the topic
    before the restored checkpoint was triggered), with the same values. The outputs by key."""
    got, had = Counter(_key(r) for r in final), Counter(_key(r) for r in before)
    assert max(had.values()) == 1, f"{role}: the killed run alone wrote a key twice"
    again = got - had
    assert max(again.values(), default=1) == 1, f"{role}: the restored run wrote a key twice"
    dups = {k for k, n in got.items() if n > 1}
    assert dups <= set(had) - settled, \
        f"{role}: duplicates outside the replayed epoch {sorted(dups - (set(had) - settled))[:5]}"
    assert len(dups) < len(had)
    by_key: dict = defaultdict(list)
    for r in final:
        by_key[_key(r)].append(r)
    for k in dups:
        first, second = by_key[k]
        assert first == second, f"{role}: the replayed {k} differs: {first} vs {second}"
    return {k: rs[0] for k, rs in by_key.items()}


def test_features_job_restart_from_checkpoint_keeps_dedup_and_windows(kafka_broker, topics, tmp_path):
    start = int(time.time() * 1000) - 2 * 3600_000
    gen = TrafficGenerator(GeneratorConfig(
        seed=11, users=300, items=200, duration_s=600, impressions_per_s=8, base_ctr=0.2,
        click_delay_median_s=20, like_delay_median_s=60, conversion_delay_median_s=120,
        max_delay_s=900, duplicate_rate=0.03, out_of_order_rate=0.02, out_of_order_max_s=4,
        malformed_rate=0.0, start_ms=start))
    events = list(gen.events())
    assert gen.stats["duplicate_impressions"] > 50 and gen.stats["duplicate_actions"] > 10
    imps = {_key(_decoded(ev)) for ev in events if ev.topic == "impressions"}
    acts = {_key(_decoded(ev)) for ev in events if ev.topic == "actions"}
    expected = reference.expected_features(
        _reference_frame(events), SPEC.windows_ms, SPEC.action_types, SPEC.ctr_action,
        SPEC.ctr_prior, SPEC.ctr_strength, SPEC.last_n, DEDUP_TTL_MS)
    assert len(expected) == len(imps) > 3000 and len(acts) > 800
    updates_wanted = {("user", int(u), int(t)) for u, t in zip(expected["user"], expected["t"])} | \
                     {("item", int(i), int(t)) for i, t in zip(expected["item"], expected["t"])}
    a, b = len(events) * 4 // 10, len(events) * 7 // 10
    # out-of-order arrivals (4 s) stay within the watermark's bound, so no record is late and
    # the values do not depend on when the watermark moved: one answer, the reference's
    settings = ("flink.out_of_orderness_ms=10000",)

    produce(events[:a], kafka_broker, topics)
    first = _start(features_command(kafka_broker, topics, tmp_path, *settings, "features_job.start=earliest"),
                   tmp_path / "first.log")
    producing: list[BaseException] = []
    try:
        # the first part through the job: its outputs settle (the rest waits for the watermark)
        counts: list = [None]

        def settled_once() -> bool:
            now = {role: len(recs) for role, recs in _outputs(kafka_broker, topics).items()}
            done = now == counts[0] and now["impressions_enriched"] > len(imps) // 5
            counts[0] = now
            return done
        wait_for("the first part's outputs", settled_once, 300, first)
        settled = _outputs(kafka_broker, topics)
        # ... and a checkpoint triggered after they were written: they precede its barrier,
        # so no restore from it or a later one replays them
        triggered, _ = _checkpoints(tmp_path)
        wait_for("a checkpoint after the first part",
                  lambda: _checkpoints(tmp_path)[1] >= triggered + 2, 60, first)

        # the second part, paced, and the crash in the middle of it, once a checkpoint
        # holding some of it completed
        def second_part() -> None:
            try:
                produce(events[a:b], kafka_broker, topics, speedup=12)
            except BaseException as exc:  # re-raised below
                producing.append(exc)
        producer = threading.Thread(target=second_part)
        producer.start()
        done_before = _checkpoints(tmp_path)[1]
        n_settled = len(settled["impressions_enriched"])
        wait_for("outputs of the second part and a checkpoint in it",
                  lambda: _checkpoints(tmp_path)[1] > done_before + 1 and len(read_all(
                      kafka_broker, topics.impressions_enriched, timeout_s=30)) > n_settled + 200,
                  240, first)
    finally:
        _kill(first)
    producer.join(120)
    assert not producer.is_alive() and not producing, producing
    before = _outputs(kafka_broker, topics)
    assert len(before["impressions_enriched"]) < len(imps), "the crash came mid-stream"

    # after the crash: copies of first-part records whose outputs were settled (the dedup
    # state alone knows them), the rest of the stream, the flush
    settled_keys = {role: {_key(r) for r in settled[role]} for role in ROLES}
    copies = [ev for ev in events[:a]
              if _key(_decoded(ev)) in settled_keys["impressions_enriched" if ev.topic == "impressions"
                                                    else "actions_deduped"]]
    copies = copies[::10]
    assert sum(ev.topic == "impressions" for ev in copies) > 50
    assert sum(ev.topic == "actions" for ev in copies) > 10
    produce(copies + events[b:] + _flush(start + 3600_000), kafka_broker, topics)
    restored = latest_checkpoint(tmp_path / "checkpoints")
    assert restored is not None and int(restored.name.split("-")[1]) >= triggered + 2
    # start=latest: a restored run that did not resume from the checkpoint's offsets would
    # skip everything sent while it was down
    second = _start(features_command(kafka_broker, topics, tmp_path, *settings, "features_job.start=latest",
                                     restore="latest"), tmp_path / "second.log")
    incomplete = ""
    try:
        def complete() -> bool:
            out = _outputs(kafka_broker, topics)
            return ({_key(r) for r in out["impressions_enriched"]} == imps
                    and {_key(r) for r in out["actions_deduped"]} == acts
                    and {_key(r) for r in out["features"]} == updates_wanted)
        try:
            wait_for("every impression and action out of the restored run", complete, 300, second)
        except AssertionError as exc:  # the checks below say what is wrong
            incomplete = str(exc)
        else:
            done = _checkpoints(tmp_path)[1]  # one more checkpoint: a late surplus record is flushed by then
            wait_for("one more checkpoint", lambda: _checkpoints(tmp_path)[1] > done, 60, second)
    finally:
        _kill(second)
    log = (tmp_path / "second.log").read_text(errors="replace")
    assert f"features restore=latest checkpoint={restored}" in log, log[-3000:]
    assert second.returncode == -signal.SIGKILL, f"{incomplete}: {log[-3000:]}"

    final = _outputs(kafka_broker, topics)
    figures = {"events": len(events), "impressions": len(imps), "actions": len(acts),
               "duplicates_injected": gen.stats["duplicate_impressions"] + gen.stats["duplicate_actions"],
               "copies_after_crash": len(copies), "restored": restored.name,
               **{f"settled_{r}": len(settled[r]) for r in ROLES},
               **{f"before_crash_{r}": len(before[r]) for r in ROLES},
               **{f"written_{r}": len(final[r]) for r in ROLES}}
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=1))  # for the record
    print(figures)
    enriched = _check_at_least_once("impressions_enriched", final["impressions_enriched"],
                                    before["impressions_enriched"], settled_keys["impressions_enriched"])
    deduped = _check_at_least_once("actions_deduped", final["actions_deduped"],
                                   before["actions_deduped"], settled_keys["actions_deduped"])
    # dedup decisions: every original once, every duplicate (the generator's, the copies) dropped
    for role, got, want in (("impressions_enriched", set(enriched), imps),
                            ("actions_deduped", set(deduped), acts)):
        assert got == want, f"{role}: {len(want - got)} missing {sorted(want - got)[:3]}, " \
                            f"{len(got - want)} unknown {sorted(got - want)[:3]}"
    for role in ("impressions_enriched", "actions_deduped"):
        n = Counter(_key(r) for r in final[role])
        assert all(n[k] == 1 for k in settled_keys[role]), f"{role}: a copy sent after the crash passed"
    # feature values: those of the reference, restored windows included
    check_enriched(list(enriched.values()), expected, SPEC)
    # the FeatureUpdates: one per entity and impression time, copies equal
    updates: dict = defaultdict(list)
    for u in final["features"]:
        updates[_key(u)].append(u)
    assert set(updates) == updates_wanted
    assert all(all(u == us[0] for u in us) for us in updates.values())
    assert not read_all(kafka_broker, topics.dead_letter, timeout_s=10), "no bad input, no dead letter"
    assert not incomplete
