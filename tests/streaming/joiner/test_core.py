import pytest

from schemas import FLAG_ACTION_STALL, FLAG_EARLY, FLAG_LATE_CORRECTION
from schemas.records import DeadLetter, Sample
from streaming.joiner import END_OF_TIME, JoinCore, JoinerConfig, KvFallback
from streaming.joiner.core import JournalPart, split_journal_key
from tests.helpers.joiner_records import Journal, act, imp

MIN = 60_000


def make(tmp_path, **kw) -> JoinCore:
    kw.setdefault("window_ms", 10 * MIN)
    kw.setdefault("orphan_wait_ms", MIN)
    kw.setdefault("stall_policy", "off")
    core = JoinCore(JoinerConfig(kv_path=str(tmp_path / "kv"), **kw))
    return core


@pytest.fixture
def core(tmp_path):
    c = make(tmp_path)
    yield c
    c.close()


def samples(out):
    return [o for o in out if isinstance(o, Sample)]


def test_joiner_emits_negative_when_window_expires(core):
    assert core.on_impression(imp("r1", 1000), now_ms=1000) == []
    assert core.advance(1000 + 10 * MIN - 1) == []
    (s,) = core.advance(1000 + 10 * MIN)
    assert s.request_id == "r1" and s.label_types == [] and s.flags == 0
    assert s.emit_time_ms == 1000 + 10 * MIN and s.slots == [1, 2] and s.sample_rate == 1.0
    assert core.metrics.negative_samples == 1 and core.metrics.window_occupancy == 0


def test_joiner_final_sample_carries_every_label_in_window(core):
    core.on_impression(imp("r1", 1000), 1000)
    core.on_action(act("r1", 3000, "click"), 3000)
    core.on_action(act("r1", 5000, "like"), 5000)
    core.on_action(act("r1", 9 * MIN, "conversion"), 9 * MIN)
    (s,) = core.advance(END_OF_TIME)
    assert s.label_types == ["click", "like", "conversion"]
    assert s.label_delays_ms == [2000, 4000, 9 * MIN - 1000]
    assert core.metrics.joined_labels == 3 and core.metrics.positive_samples == 1


def test_joiner_early_policy_emits_at_first_positive_then_corrects(tmp_path):
    core = make(tmp_path, policy="early")
    core.on_impression(imp("r1", 1000), 1000)
    (first,) = core.on_action(act("r1", 2000, "click"), 2000)
    assert first.flags == FLAG_EARLY and first.label_types == ["click"]
    assert first.emit_time_ms == 2000
    (corr,) = core.on_action(act("r1", 4000, "like"), 4000)
    assert corr.flags == FLAG_LATE_CORRECTION and corr.label_types == ["like"]
    assert core.advance(END_OF_TIME) == []  # the final sample was the early one
    assert core.metrics.final_samples == 1 and core.metrics.early_samples == 1
    core.close()


def test_joiner_late_action_becomes_correction_via_kv(core):
    core.on_impression(imp("r1", 1000), 1000)
    (neg,) = core.advance(20 * MIN)
    assert neg.label_types == []
    (corr,) = core.on_action(act("r1", 3 * 3600_000, "conversion"), 20 * MIN)
    assert corr.flags == FLAG_LATE_CORRECTION and corr.label_types == ["conversion"]
    assert corr.label_delays_ms == [3 * 3600_000 - 1000] and corr.ids == neg.ids
    assert core.on_action(act("r1", 3 * 3600_000 + 5, "conversion"), 20 * MIN) == []
    assert core.metrics.late_corrections == 1 and core.metrics.duplicate_actions == 1
    assert core.metrics.kv_size == 1


def test_joiner_late_duplicate_of_a_label_in_the_final_sample_is_dropped(core):
    core.on_impression(imp("r1", 1000), 1000)
    core.on_action(act("r1", 2000, "click"), 2000)
    core.advance(20 * MIN)
    assert core.on_action(act("r1", 21 * MIN, "click"), 21 * MIN) == []
    assert core.metrics.duplicate_actions == 1 and core.metrics.late_corrections == 0


def test_joiner_orphan_action_goes_to_dead_letter_after_wait(core):
    assert core.on_action(act("ghost", 1000), 1000) == []
    assert core.metrics.pending_actions == 1
    assert core.advance(1000 + MIN - 1) == []
    (dl,) = core.advance(1000 + MIN)
    assert isinstance(dl, DeadLetter) and "orphan" in dl.reason and dl.stage == "joiner"
    assert core.metrics.orphans == 1 and core.metrics.pending_actions == 0


def test_joiner_action_before_its_impression_is_joined(core):
    core.on_action(act("r1", 1500, "click"), 1000)
    core.on_action(act("r1", 1600, "click"), 1000)  # duplicate while waiting
    assert core.on_impression(imp("r1", 1000), 1000) == []
    (s,) = core.advance(END_OF_TIME)
    assert s.label_types == ["click"] and s.label_delays_ms == [500]
    assert core.metrics.duplicate_actions == 1 and core.metrics.orphans == 0


def test_joiner_duplicate_actions_in_window_count_once(core):
    core.on_impression(imp("r1", 1000), 1000)
    for t in (2000, 2500, 3000):
        core.on_action(act("r1", t, "click"), t)
    (s,) = core.advance(END_OF_TIME)
    assert s.label_types == ["click"] and core.metrics.duplicate_actions == 2


def test_joiner_drops_a_duplicate_impression_in_window(core):
    core.on_impression(imp("r1", 1000), 1000)
    core.on_impression(imp("r1", 1200), 1200)
    assert len(core.advance(END_OF_TIME)) == 1
    assert core.metrics.duplicate_impressions == 1


def test_joiner_negative_downsampling_carries_rate_and_keeps_positives(tmp_path):
    core = make(tmp_path, negative_sample_rate=0.25)
    for i in range(4000):
        core.on_impression(imp(f"r{i}", 1000 + i), 1000)
        if i % 10 == 0:
            core.on_action(act(f"r{i}", 2000 + i), 2000)
    out = samples(core.advance(END_OF_TIME))
    pos = [s for s in out if s.label_types]
    neg = [s for s in out if not s.label_types]
    # the policy's rate on every sample, positives included (schemas/contracts.py)
    assert len(pos) == 400 and all(s.sample_rate == 0.25 for s in pos)
    assert 0.2 < len(neg) / 3600 < 0.3 and all(s.sample_rate == 0.25 for s in neg)
    assert core.metrics.dropped_negatives == 3600 - len(neg)
    core.close()


def test_joiner_memory_bound_evicts_to_kv_and_late_label_corrects(tmp_path):
    core = make(tmp_path, max_entries=2)
    core.on_impression(imp("a", 1000), 1000)
    core.on_impression(imp("b", 1001), 1001)
    (evicted,) = core.on_impression(imp("c", 1002), 1002)
    assert evicted.request_id == "a" and core.metrics.evicted == 1
    (corr,) = core.on_action(act("a", 1500), 1500)
    assert corr.flags == FLAG_LATE_CORRECTION
    assert len(core.window) == 2
    core.close()


def test_joiner_stall_hold_emits_no_fake_negatives_and_recovers(tmp_path):
    core = make(tmp_path, stall_policy="hold", stall_after_ms=2 * MIN, stall_min_impressions=5,
                max_hold_ms=60 * MIN)
    core.on_action(act("warm", 0 + 1, "click", item=99), 1)      # actions flowing
    for i in range(30):  # impressions keep flowing for 30 minutes, actions do not
        t = 1000 + i * MIN
        core.on_impression(imp(f"r{i}", t), t)
        assert samples(core.advance(t)) == []
    assert core.stall.stalled and core.metrics.stall_episodes == 1
    # the outage ends: the backlog of actions arrives, catching up in event time
    core.on_action(act("r3", 1000 + 3 * MIN + 500, "click"), 30 * MIN)
    core.on_action(act("fresh", 30 * MIN, "click", item=98), 30 * MIN)
    assert not core.stall.stalled
    out = samples(core.advance(30 * MIN))
    assert {s.request_id for s in out} == {f"r{i}" for i in range(20)}
    assert [s.label_types for s in out if s.request_id == "r3"] == [["click"]]
    assert all(s.flags == 0 for s in out)
    core.close()


def test_joiner_stall_hold_flags_windows_held_beyond_max_hold(tmp_path):
    core = make(tmp_path, stall_policy="hold", stall_after_ms=MIN, stall_min_impressions=1,
                max_hold_ms=5 * MIN)
    for i in range(30):
        t = 1000 + i * MIN
        core.on_impression(imp(f"r{i}", t), t)
    out = samples(core.advance(1000 + 29 * MIN))
    # deadlines are t + 10 min; held until 5 min past them
    assert [s.request_id for s in out] == [f"r{i}" for i in range(15)]
    assert all(s.flags == FLAG_ACTION_STALL for s in out)
    assert core.metrics.stall_flagged == 15
    core.close()


def test_joiner_stall_flag_policy_closes_on_time_with_flag(tmp_path):
    core = make(tmp_path, stall_policy="flag", stall_after_ms=MIN, stall_min_impressions=1)
    for i in range(15):
        t = 1000 + i * MIN
        core.on_impression(imp(f"r{i}", t), t)
    out = samples(core.advance(1000 + 14 * MIN))
    assert len(out) == 5 and all(s.flags & FLAG_ACTION_STALL for s in out)
    core.close()


def test_joiner_invalid_records_are_dead_lettered(core):
    (d1,) = core.on_impression(imp("", 1000), 1000)
    (d2,) = core.on_action(act("r1", 1000, kind=""), 1000)
    assert isinstance(d1, DeadLetter) and d1.reason.startswith("invalid")
    assert isinstance(d2, DeadLetter) and core.metrics.invalid == 2


def test_joiner_action_after_kv_ttl_is_an_orphan(tmp_path):
    core = make(tmp_path, kv_ttl_ms=60 * MIN)
    core.on_impression(imp("r1", 1000), 1000)
    core.advance(200 * MIN)
    core.on_action(act("r1", 200 * MIN), 200 * MIN)
    (dl,) = core.advance(202 * MIN)
    assert isinstance(dl, DeadLetter) and core.metrics.kv_size == 0
    core.close()


def test_joiner_restore_from_journal_continues_like_an_uninterrupted_core(tmp_path):
    journal = Journal()

    events = [("i", "r1", 1000), ("i", "r2", 2000), ("a", "r1", 3000), ("a", "ghost", 3000),
              ("i", "r3", 12 * MIN), ("a", "r3", 13 * MIN), ("a", "r2", 14 * MIN)]

    def feed(c, evs):
        out = []
        for kind, rid, t in evs:
            out += c.on_impression(imp(rid, t), t) if kind == "i" else c.on_action(act(rid, t), t)
            out += c.advance(t)
        return out

    ref = make(tmp_path / "ref")
    expected = feed(ref, events) + ref.advance(END_OF_TIME)
    ref.close()

    kv_dir = tmp_path / "run"
    first = JoinCore(JoinerConfig(window_ms=10 * MIN, orphan_wait_ms=MIN, stall_policy="off",
                                  kv_path=str(kv_dir / "kv")), journal=journal)
    got = feed(first, events[:4])
    assert set(journal) == {"W|r1|7", "W|r2|7", "P|ghost|7"}
    assert dict(first.snapshot()) == journal
    first.close()
    second = JoinCore(JoinerConfig(window_ms=10 * MIN, orphan_wait_ms=MIN, stall_policy="off",
                                   kv_path=str(kv_dir / "kv")), journal=journal)
    second.restore(journal.items())
    got += feed(second, events[4:]) + second.advance(END_OF_TIME)
    second.close()
    strip = lambda out: sorted((type(o).__name__, getattr(o, "request_id", ""),  # noqa: E731
                                tuple(getattr(o, "label_types", ())), getattr(o, "flags", 0))
                               for o in out)
    assert strip(got) == strip(expected)


def test_joiner_decides_window_membership_by_event_time_not_processing_order(core):
    # a backlog: the conversion (30 min after the impression) is read before its impression
    core.on_action(act("r1", 1000 + 30 * MIN, "conversion"), 1000)
    core.on_impression(imp("r1", 1000), 1000)
    core.on_action(act("r1", 1000 + MIN, "click"), 1000)
    final, corr = core.advance(END_OF_TIME)
    assert final.label_types == ["click"] and final.flags == 0
    assert corr.label_types == ["conversion"] and corr.flags == FLAG_LATE_CORRECTION
    assert corr.label_delays_ms == [30 * MIN]
    assert core.on_action(act("r1", 1000 + 40 * MIN, "conversion"), 50 * MIN) == []
    assert core.metrics.late_corrections == 1 and core.metrics.duplicate_actions == 1


def test_joiner_restored_core_ignores_kv_rows_of_the_rolled_back_epoch(tmp_path):
    """After a restore the KV still holds what the lost epoch wrote after the checkpoint. A
    replayed action read before its replayed impression must not take such a row's labels
    as 'already sent' (the label would be lost); it waits for its impression instead."""
    journal = Journal()

    cfg = JoinerConfig(window_ms=10 * MIN, orphan_wait_ms=MIN, stall_policy="off",
                       kv_path=str(tmp_path / "kv"))
    first = JoinCore(cfg, journal=journal)
    first.on_impression(imp("r0", 1000), 1000)
    first.advance(20 * MIN)          # r0 closes: a KV row written before the checkpoint
    checkpoint = dict(journal)
    first.on_impression(imp("r1", 21 * MIN), 21 * MIN)
    first.on_action(act("r1", 22 * MIN), 21 * MIN)
    (lost,) = first.advance(40 * MIN)  # r1 closes with its click: this output is rolled back
    assert lost.label_types == ["click"]
    first.close()

    second = JoinCore(cfg, journal=journal)
    journal.clear()
    journal.update(checkpoint)
    second.restore(list(journal.items()))
    assert second.on_action(act("r1", 22 * MIN), 21 * MIN) == []  # read before its impression
    assert second.metrics.kv_unconfirmed == 1 and second.metrics.pending_actions == 1
    second.on_impression(imp("r1", 21 * MIN), 21 * MIN)
    (final,) = second.advance(40 * MIN)
    assert final.request_id == "r1" and final.label_types == ["click"]
    # a row of the checkpointed history still answers a late action at once
    (corr,) = second.on_action(act("r0", 50 * MIN, "conversion"), 50 * MIN)
    assert corr.flags == FLAG_LATE_CORRECTION and corr.label_types == ["conversion"]
    second.close()


def test_joiner_unconfirmed_kv_row_serves_the_action_once_its_wait_ran_out(tmp_path):
    """A row no checkpoint vouches for (another job's, say) is still used: after the action
    waited orphan_wait_ms for a replay of its impression that did not come."""
    cfg = JoinerConfig(window_ms=10 * MIN, orphan_wait_ms=MIN, stall_policy="off")
    kv = KvFallback(tmp_path / "kv", cfg.kv_ttl_ms)
    other = JoinCore(cfg, kv, journal=lambda k, v: None)
    other.on_impression(imp("r0", 1000), 1000)
    other.advance(20 * MIN)
    mine = JoinCore(cfg, kv, journal=lambda k, v: None)
    assert mine.on_action(act("r0", 30 * MIN), 30 * MIN) == []
    (corr,) = mine.advance(32 * MIN)
    assert corr.flags == FLAG_LATE_CORRECTION and corr.label_types == ["click"]
    assert mine.metrics.orphans == 0 and mine.metrics.late_corrections == 1
    kv.close()


def test_journal_keys_keep_their_persisted_strings():
    # journal keys live in Flink state and checkpoints: the parts' strings must never change
    assert [p.key("r1|7") for p in JournalPart] == ["W|r1|7", "P|r1|7", "L|r1|7", "S|r1|7"]
    assert JournalPart.LINEAGE.key() == "S|"
    assert type(JournalPart.WINDOW.key("k")) is str and type(JournalPart.LINEAGE.key()) is str
    assert split_journal_key("P|ghost|7") == (JournalPart.PENDING, "ghost|7")
    assert split_journal_key("S|") == (JournalPart.LINEAGE, "")


def test_end_of_time_is_flinks_final_watermark_everywhere():
    from streaming.event_time import END_OF_TIME as eot
    from streaming.features import online_store, pipeline
    from streaming.joiner import core as core_module

    assert eot == END_OF_TIME == (1 << 63) - 1  # Long.MAX_VALUE, Flink's MAX_WATERMARK
    assert core_module.END_OF_TIME is pipeline.END_OF_TIME is online_store.END_OF_TIME is eot


def test_joiner_drops_a_duplicate_impression_that_arrives_after_its_window_closed(core):
    # a producer's retry delivered after the original's window closed: the original's final
    # sample is out, the copy makes none (it made a second one); a late impression that is
    # no copy still gets its sample
    core.on_impression(imp("r1", 1000), 1000)
    (first,) = samples(core.advance(1000 + 10 * MIN))
    assert first.request_id == "r1"
    assert core.on_impression(imp("r1", 1000), 1000 + 12 * MIN) == []
    core.on_impression(imp("r2", 1000), 1000 + 12 * MIN)
    assert [s.request_id for s in samples(core.advance(END_OF_TIME))] == ["r2"]
    assert core.metrics.duplicate_impressions == 1


def test_joiner_a_restored_core_takes_a_replayed_impression_whose_kv_row_was_rolled_back(tmp_path):
    # the lost epoch closed r1 (KV row written) after the checkpoint; the restored core must
    # emit r1's sample again when the source replays it, not drop it as a copy
    journal = Journal()
    kv = KvFallback(tmp_path / "kv", JoinerConfig().kv_ttl_ms)
    a = JoinCore(JoinerConfig(window_ms=10 * MIN, stall_policy="off"), kv, journal=journal)
    checkpoint = Journal(journal)
    a.on_impression(imp("r1", 1000), 1000)
    assert len(samples(a.advance(1000 + 10 * MIN))) == 1
    b = JoinCore(JoinerConfig(window_ms=10 * MIN, stall_policy="off"), kv, journal=checkpoint)
    b.restore(checkpoint.items())
    b.on_impression(imp("r1", 1000), 1000 + 11 * MIN)
    assert [s.request_id for s in samples(b.advance(END_OF_TIME))] == ["r1"]
    assert b.metrics.duplicate_impressions == 0
    kv.close()


def test_encoded_samples_are_the_records_bytes(tmp_path):
    """``encode_samples`` (the Flink job's core) writes each sample as a message spliced from
    the impression's bytes: the same bytes as encoding the record the core gives otherwise,
    for final samples, early ones and corrections from the window and from the KV."""
    from schemas import Impression, codec_for

    imp_codec, sample_codec = codec_for(Impression), codec_for(Sample)
    events = [("i", "r1", 1000), ("a", "r1", 3000), ("i", "r2", 2000), ("i", "r3", 4000),
              ("a", "r3", 5000), ("a", "r3like", 0), ("a", "r1late", 30 * MIN),
              ("a", "r2late", 40 * MIN)]

    def run(path, encode: bool) -> list:
        core = JoinCore(JoinerConfig(window_ms=10 * MIN, orphan_wait_ms=MIN, stall_policy="off",
                                     policy="early", negative_sample_rate=0.5,
                                     kv_path=str(path)), encode_samples=encode)
        out: list = []
        for kind, rid, t in events:
            if kind == "i":
                rec = imp(rid, t)
                out += core.on_impression(rec, t, raw=imp_codec.encode(rec))
            elif rid == "r3like":
                out += core.on_action(act("r3", 6000, "like"), 6000)
            else:
                label = "like" if rid.endswith("late") else "click"  # late: from the KV row
                out += core.on_action(act(rid.removesuffix("late"), t, label), t)
            out += core.advance(t)
        out += core.advance(END_OF_TIME)
        core.close()
        return out

    plain = [sample_codec.encode(o) for o in run(tmp_path / "a", False) if isinstance(o, Sample)]
    spliced = run(tmp_path / "b", True)
    assert all(isinstance(o, bytes) for o in spliced)
    # early r1 and r3; corrections: r3 in its window, r1 and r2 (its negative down-sampled) from the KV
    assert spliced == plain and len(plain) == 5
    assert {sample_codec.decode(b).flags for b in spliced} >= {FLAG_EARLY, FLAG_LATE_CORRECTION}


def test_lineage_is_journaled_once_per_call_that_closes(tmp_path):
    """Closing a window moves the KV sequence number the lineage journals; a call that
    closes many windows journals it once (a checkpoint never falls inside a call), and a
    restored core continues from that number."""
    writes: list[str] = []
    journal = Journal()

    def counting(key: str, data: bytes | None) -> None:
        writes.append(key)
        journal(key, data)

    cfg = JoinerConfig(window_ms=10 * MIN, orphan_wait_ms=MIN, stall_policy="off",
                       kv_path=str(tmp_path / "kv"))
    core = JoinCore(cfg, journal=counting)
    for i in range(50):
        core.on_impression(imp(f"r{i}", 1000 + i), 1000 + i)
    lineage = JournalPart.LINEAGE.key()
    assert lineage not in writes
    assert len(core.advance(20 * MIN)) == 50
    assert writes.count(lineage) == 1 and core.kv_seq == 50
    core.close()
    restored = JoinCore(cfg, journal=journal)
    restored.restore(journal.items())
    assert restored.kv_seq == 50 and restored.lineage[0] == (core.writer, 0)
    restored.close()
