"""Realtime features and deduplication, in front of the joiner (docs/features.md).

    spec.py           FeatureSpec: the one place features are declared ([features] config)
    dedup.py          DedupFilter: duplicate keys inside a bounded event-time TTL
    entity_state.py   EntityState: one user's/item's windowed event history, engine-free
    feature_step.py   FeatureStep: dedup + point-in-time enrichment for one keyed step
    pipeline.py       FeaturePipeline: both steps over an in-memory stream (tests, bench)
    online_store.py   OnlineStore: rocksdict store of FeatureUpdates, as-of lookups
    flink_functions.py / job.py   the PyFlink job (`streamtrain features`)
    state_cache.py    StateCache: the job functions' live states of recent keys
"""
