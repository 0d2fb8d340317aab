"""KvFallback.purge starts where the last purge ended (not at the first expiry key, past the
tombstones of every earlier purge); a record stored already expired, below that point, is
still purged, and a reopened store purges what an earlier process left."""

from streaming.joiner.kv_fallback import KvFallback


def test_kv_fallback_purge_finds_a_record_stored_below_the_last_purge(tmp_path):
    kv = KvFallback(tmp_path / "kv", ttl_ms=1000)
    for i in range(50):
        kv.put(f"r{i}|1", b"x", (), event_time_ms=i * 100)
    assert kv.purge(now_ms=3000) == 21  # expire 1000..3000
    kv.put("late|1", b"x", (), event_time_ms=500)  # expires at 1500: behind the last purge
    assert kv.purge(now_ms=3000) == 1 and kv.get("late|1", now_ms=0) is None
    assert kv.purge(now_ms=5900) == 29 and kv.size == 0
    kv.close()


def test_kv_fallback_purges_after_reopen(tmp_path):
    kv = KvFallback(tmp_path / "kv", ttl_ms=1000)
    for i in range(10):
        kv.put(f"r{i}|1", b"x", (), event_time_ms=i * 100)
    assert kv.purge(now_ms=1400) == 5
    kv.close()
    kv = KvFallback(tmp_path / "kv", ttl_ms=1000)
    assert kv.size == 5 and kv.purge(now_ms=1900) == 5 and kv.size == 0
    kv.close()
