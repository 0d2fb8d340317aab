import subprocess
import sys

import pytest

from streaming.joiner.kv_fallback import KvFallback, KvFallbackError, KvRow
from streamtrain.paths import REPO_ROOT


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


def _rows_of(store, keys, now_ms=0):
    """Every row's (impression, labels, expiry, writer, seq), and the expiry index."""
    rows = {k: store.get(k, now_ms) for k in keys}
    index = [k for k in store._keys_from(b"e") if k[:1] == b"e"]
    return rows, index, store.size


def test_put_many_writes_what_the_same_puts_one_by_one_write(tmp_path):
    """One batch = the same puts in order: overwrites of stored rows and of rows earlier in
    the batch, a changed expiry (its old index entry goes), the size counts keys once."""
    rows = [KvRow("a|1", b"A", ("click",), 100, b"w" * 8, 0),
            KvRow("b|1", b"B", (), 200, b"w" * 8, 1),
            KvRow("a|1", b"A2", ("click", "like"), 300, b"w" * 8, 2),  # again, later expiry
            KvRow("c|1", b"C", (), 50, b"w" * 8, 3)]
    one, many = KvFallback(tmp_path / "one", ttl_ms=1000), KvFallback(tmp_path / "many", ttl_ms=1000)
    for store in (one, many):
        store.put("b|1", b"old", (), event_time_ms=900)  # stored before: expiry 1900 -> 1200
    for row in rows:
        one.put(*row)
    many.put_many(rows)
    keys = ["a|1", "b|1", "c|1"]
    assert _rows_of(many, keys) == _rows_of(one, keys)
    rows_now, index, size = _rows_of(many, keys)
    assert size == 3 and len(index) == 3
    assert rows_now["a|1"].impression == b"A2" and rows_now["a|1"].expire_ms == 1300
    assert rows_now["b|1"].expire_ms == 1200 and rows_now["a|1"].seq == 2
    assert many.purge(1250) == 2  # c (1050) and b (1200): no stale index entry purges a
    assert many.get("a|1", 0).impression == b"A2" and many.size == 1
    many.put_many([])
    one.close()
    many.close()


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


def test_a_store_closing_in_a_worker_thread_is_waited_for_at_exit(tmp_path):
    """PyFlink's process mode runs the joiner in threads of the client process; a store still
    closing when the main thread returned took the interpreter down (SIGABRT). The process
    now waits at exit for stores opened off the main thread: an exit hook registered before
    (so run after the module's) finds the worker's store closed."""
    script = f"""
import atexit, threading, time
stores = []
atexit.register(lambda: print("closed" if stores[0]._db is None else "open", flush=True))
from streaming.joiner.kv_fallback import KvFallback
opened = threading.Event()
def worker():
    stores.append(KvFallback({str(tmp_path / "kv")!r}, ttl_ms=10**9))
    for i in range(1000):
        stores[0].put(f"r{{i}}|1", b"x" * 100, ("click",), event_time_ms=i)
    opened.set()
    time.sleep(1.0)  # the main thread has returned by now
    stores[0].close()
threading.Thread(target=worker, daemon=True).start()
opened.wait()
"""
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "closed"
