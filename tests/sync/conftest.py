import pytest

from sync.store import MemoryRowStore, RocksRowStore


@pytest.fixture(params=["memory", "rocks"])
def row_store(request, tmp_path):
    """Every RowStore implementation (the contract suite runs on each)."""
    store = MemoryRowStore() if request.param == "memory" else RocksRowStore(tmp_path / "rows")
    yield store
    store.close()
