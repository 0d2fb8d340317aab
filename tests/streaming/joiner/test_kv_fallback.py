import pytest

from streaming.joiner.kv_fallback import KvFallback, KvFallbackError


@pytest.fixture
def kv(tmp_path):
    store = KvFallback(tmp_path / "kv", ttl_ms=1000)
    yield store
    store.close()


def test_kv_fallback_round_trips_a_record(kv):
    kv.put("r1|7", b"\x00imp", ("click", "like"), event_time_ms=100)
    rec = kv.get("r1|7", now_ms=200)
    assert rec.impression == b"\x00imp" and rec.labels == ("click", "like")
    assert rec.expire_ms == 1100 and kv.size == 1
    assert kv.get("nope|1", now_ms=200) is None


def test_kv_fallback_misses_after_ttl_even_before_purge(kv):
    kv.put("a|1", b"x", (), event_time_ms=0)
    assert kv.get("a|1", now_ms=999) is not None
    assert kv.get("a|1", now_ms=1000) is None


def test_kv_fallback_purge_deletes_only_expired_records(kv):
    for i in range(10):
        kv.put(f"k{i}|1", b"x", (), event_time_ms=i * 100)
    assert kv.purge(now_ms=1450) == 5  # expire 1000..1400
    assert kv.size == 5 and kv.purged == 5
    assert kv.get("k4|1", now_ms=0) is None and kv.get("k5|1", now_ms=0) is not None
    assert kv.purge(now_ms=1450) == 0


def test_kv_fallback_put_is_idempotent(kv):
    kv.put("a|1", b"x", ("click",), 0)
    kv.put("a|1", b"x", ("click",), 0)
    assert kv.size == 1
    assert kv.purge(now_ms=5000) == 1 and kv.size == 0


def test_kv_fallback_survives_reopen(tmp_path):
    kv = KvFallback(tmp_path / "kv", ttl_ms=1000)
    kv.put("a|1", b"x", (), 0)
    kv.close()
    kv = KvFallback(tmp_path / "kv", ttl_ms=1000)
    try:
        assert kv.size == 1 and kv.get("a|1", 10).impression == b"x"
    finally:
        kv.close()


def test_kv_fallback_second_opener_gets_a_clear_error(kv):
    with pytest.raises(KvFallbackError, match="kv_path"):
        KvFallback(kv.path, ttl_ms=10)


def test_kv_fallback_temporary_store_is_removed_on_close():
    kv = KvFallback(None, ttl_ms=10)
    path = kv.path
    assert path.exists()
    kv.close()
    assert not path.exists()


def test_kv_fallback_records_carry_their_writer_and_sequence(kv):
    kv.put("a|1", b"x", ("click",), event_time_ms=0, writer=b"w" * 8, seq=41)
    rec = kv.get("a|1", now_ms=10)
    assert rec.writer == b"w" * 8 and rec.seq == 41
    kv.put("a|1", b"x", (), event_time_ms=0, writer=b"v" * 8, seq=3)  # a replay overwrites
    rec = kv.get("a|1", now_ms=10)
    assert (rec.writer, rec.seq, rec.labels) == (b"v" * 8, 3, ())


def test_kv_fallback_refuses_a_store_of_another_layout(tmp_path):
    from rocksdict import Options, Rdict

    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    old = Rdict(str(tmp_path / "old"), opts)
    old[b"da|1"] = b"\x00" * 12  # a row of the first layout: no version key
    old.close()
    with pytest.raises(KvFallbackError, match="has layout '1'.*reads '2'"):
        KvFallback(tmp_path / "old", ttl_ms=1000)
    reopened = KvFallback(tmp_path / "new", ttl_ms=1000)  # an empty store takes the layout
    reopened.put("a|1", b"x", (), event_time_ms=0)
    reopened.close()
    again = KvFallback(tmp_path / "new", ttl_ms=1000)
    assert again.size == 1
    again.close()
