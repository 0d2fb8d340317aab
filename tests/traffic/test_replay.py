import csv
import json
from collections import Counter
from datetime import UTC, datetime

import pytest

from schemas import Action, Impression, codec_for
from streamtrain.config import ConfigError
from traffic.replay import ReplayPlan


def test_replay_talkingdata_matches_the_csv(shared_data):
    plan = ReplayPlan.from_file("talkingdata")
    events, dead, stats = plan.events(shared_data)
    with open(shared_data / "talkingdata_adtracking_sample.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert not dead
    assert stats["impressions"] == len(rows)
    assert stats["actions"] == sum(r["is_attributed"] == "1" for r in rows) == 227
    times = [e.timestamp_ms for e in events]
    assert times == sorted(times)
    # every conversion carries the attributed time and the row's request id
    convs = [codec_for(Action).decode(e.value) for e in events if e.topic == "actions"]
    expected = {f"td-{i}": r["attributed_time"] for i, r in enumerate(rows) if r["is_attributed"] == "1"}
    for c in convs:
        t = datetime.strptime(expected[c.request_id], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        assert c.event_time_ms == int(t.timestamp() * 1000) and c.action_type == "conversion"


def test_replay_taobao_maps_behaviours(shared_data):
    events, dead, stats = ReplayPlan.from_file("taobao").events(shared_data)
    assert not dead
    assert stats["impressions"] == 98_361
    kinds = Counter(codec_for(Action).decode(e.value).action_type for e in events if e.topic == "actions")
    assert kinds == {"cart": 6_063, "fav": 3_383, "buy": 2_493}
    imp = codec_for(Impression).decode(next(e.value for e in events if e.topic == "impressions"))
    assert imp.request_id == f"{imp.user_id}:{imp.item_id}" and len(imp.ids) == 3


def test_replay_bad_rows_become_dead_letters_with_reason(tmp_path):
    (tmp_path / "log.csv").write_text("u,i,t,kind\n1,2,100,view\n3,4,not-a-time,view\n5,6,300,buy\n")
    (tmp_path / "m.toml").write_text(
        '[source]\npath = "log.csv"\ntime_format = "unix_s"\n'
        '[impression]\nfilter = { kind = ["view"] }\ntime = "t"\nrequest_id = "{u}-{i}"\nuser = "u"\n'
        'item = "i"\nslots = ["u", "i"]\n'
        '[[actions]]\nfilter = { kind = ["buy"] }\ntime = "t"\ntype = "{kind}"\nrequest_id = "{u}-{i}"\n'
        'user = "u"\nitem = "i"\n')
    events, dead, stats = ReplayPlan.from_file(tmp_path / "m.toml").events(tmp_path)
    assert [e.topic for e in events] == ["impressions", "actions"]
    assert len(dead) == 1 and "not-a-time" in dead[0].reason and dead[0].raw == b"3,4,not-a-time,view"
    assert stats["dead_letters"] == 1


def test_replay_mapping_errors_name_what_is_missing(tmp_path):
    (tmp_path / "m.toml").write_text('[source]\npath = "x.csv"\n[impression]\ntime = "t"\n')
    with pytest.raises(ConfigError, match="request_id"):
        ReplayPlan.from_file(tmp_path / "m.toml")


# ---- the dead-letter check before sending --------------------------------------------------

NINETIES_S = 820_454_400  # 1996-01-01, unix seconds
RECENT_S = 1_700_000_000
BUY = ("buy",)  # the action types of the log below, declared as its users would (validation.action_types)


def _log(tmp_path, times: list[int]):
    """A small CSV (a view per row, a buy for every third) and its mapping."""
    rows = [f"{n + 1},{n + 2},{t},{'buy' if n % 3 == 2 else 'view'}" for n, t in enumerate(times)]
    (tmp_path / "log.csv").write_text("u,i,t,kind\n" + "\n".join(rows) + "\n")
    (tmp_path / "m.toml").write_text(
        '[source]\npath = "log.csv"\ntime_format = "unix_s"\n'
        '[impression]\nfilter = { kind = ["view"] }\ntime = "t"\nrequest_id = "r{_row}"\nuser = "u"\n'
        'item = "i"\nslots = ["u", "i"]\n'
        '[[actions]]\nfilter = { kind = ["buy"] }\ntime = "t"\ntype = "{kind}"\nrequest_id = "r{_row}"\n'
        'user = "u"\nitem = "i"\n')
    return tmp_path / "m.toml"


def test_replay_check_counts_what_the_jobs_validation_would_reject(tmp_path):
    from schemas.validation import ValidationLimits
    from traffic.replay import dead_letter_check

    events, dead, _ = ReplayPlan.from_file(_log(tmp_path, [NINETIES_S + n for n in range(9)])).events(tmp_path)
    now = RECENT_S * 1000
    check = dead_letter_check(events, dead, ValidationLimits(action_types=BUY), now)
    assert (check.records, check.bad, check.fraction) == (9, 9, 1.0)
    assert check.rejected == {"absurd timestamp": 9}
    assert "validation.min_event_time_ms=946684800000" in check.summary()
    assert dead_letter_check(events, dead, ValidationLimits(min_event_time_ms=0, action_types=BUY), now).bad == 0
    assert dead_letter_check(events, dead, ValidationLimits(min_event_time_ms=800_000_000_000,
                                                            action_types=BUY), now).bad == 0
    # a row the mapping cannot use counts too
    (tmp_path / "log.csv").write_text("u,i,t,kind\n1,2,x,view\n3,4,1700000000,view\n")
    events, dead, _ = ReplayPlan.from_file(tmp_path / "m.toml").events(tmp_path)
    check = dead_letter_check(events, dead, ValidationLimits(action_types=BUY), now)
    assert (check.records, check.mapping, check.bad) == (2, 1, 1) and "unusable rows" in check.summary()


def test_replay_refuses_a_log_the_jobs_would_mostly_reject_naming_the_floor(tmp_path, caplog):
    """A 1990s log against the default 2000-01-01 floor: exit code 2 before touching Kafka
    (the bootstrap here is unreachable), with the setting that fixes it."""
    from traffic.cli import replay_main

    mapping = _log(tmp_path, [NINETIES_S + n for n in range(30)])
    with caplog.at_level("ERROR"):
        rc = replay_main([str(mapping), "--data-dir", str(tmp_path), "--set", "kafka.bootstrap=127.0.0.1:9"])
    assert rc == 2
    msg = " ".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert "replay refused: 30 of 30 records (100.0%) would go to the dead-letter topic" in msg
    assert "validation.min_event_time_ms" in msg and "--force" in msg


@pytest.mark.integration
def test_replay_old_log_with_the_floor_lowered_or_forced_is_sent(tmp_path, kafka_broker, caplog):
    import uuid

    from streamtrain.kafka_io import TopicsConfig, read_all
    from traffic.cli import replay_main

    def replay(mapping, *extra: str) -> tuple[int, dict]:
        topics = TopicsConfig(retention_hours=-1).suffixed(uuid.uuid4().hex[:8])
        sets = [f"topics.{f}={getattr(topics, f)}" for f in TopicsConfig.NAME_FIELDS]
        sets += ["topics.retention_hours=-1", f"kafka.bootstrap={kafka_broker.bootstrap}",
                 "validation.action_types=buy"]  # the log's own action type, declared
        stats = tmp_path / f"stats-{uuid.uuid4().hex[:6]}.json"
        rc = replay_main([str(mapping), "--data-dir", str(tmp_path), "--stats", str(stats),
                          *extra, *[a for s in sets for a in ("--set", s)]])
        out = json.loads(stats.read_text()) if stats.exists() else {}
        out["topics"] = topics
        return rc, out

    old = _log(tmp_path, [NINETIES_S + n for n in range(30)])
    rc, out = replay(old, "--set", "validation.min_event_time_ms=0")
    assert rc == 0 and out["sent"] == {"impressions": 20, "actions": 10}
    assert out["dead_letter_check"]["dead_letters"] == 0
    assert len(read_all(kafka_broker, out["topics"].impressions, expected=20)) == 20

    caplog.clear()
    with caplog.at_level("WARNING"):
        rc, out = replay(old, "--force")
    assert rc == 0 and out["sent"] == {"impressions": 20, "actions": 10}
    assert out["dead_letter_check"]["dead_letters"] == 30
    assert any("--force: 30 of 30 records" in r.getMessage() for r in caplog.records)

    # a few bad records (> 1%): sent, with a loud warning
    caplog.clear()
    mixed = _log(tmp_path, [NINETIES_S] * 3 + [RECENT_S + n for n in range(27)])
    with caplog.at_level("WARNING"):
        rc, out = replay(mixed)
    assert rc == 0 and sum(out["sent"].values()) == 30
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "dead-letter topic" in r.getMessage()]
    assert warned and "3 of 30 records (10.0%)" in warned[0].getMessage()
