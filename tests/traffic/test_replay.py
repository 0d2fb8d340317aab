import csv
from collections import Counter
from datetime import datetime, timezone

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
        t = datetime.strptime(expected[c.request_id], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
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
