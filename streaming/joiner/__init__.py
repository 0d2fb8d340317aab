"""The joiner: impressions x delayed actions in a waiting window (HashQueue + rocksdict KV
fallback), engine-free in ``core.py``, run by the PyFlink job in ``job.py``.
The join semantics are documented in ``streaming.joiner.core``; see also docs/joiner.md."""

from streaming.event_time import END_OF_TIME
from streaming.joiner.config import JoinerConfig
from streaming.joiner.core import JoinCore, JournalPart, join_key
from streaming.joiner.hash_queue import HashQueue
from streaming.joiner.kv_fallback import KvFallback, KvRecord
from streaming.joiner.metrics import JoinerMetrics
from streaming.joiner.stall_detector import StallDetector

__all__ = ["END_OF_TIME", "HashQueue", "JoinCore", "JoinerConfig", "JoinerMetrics",
           "JournalPart", "KvFallback", "KvRecord", "StallDetector", "join_key"]
