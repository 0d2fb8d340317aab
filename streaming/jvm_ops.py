"""The jobs' per-record plumbing in the JVM: key selectors and event-time stamps that would
otherwise be Python operators, and the feature job's event-time sort that would otherwise
be a Python timer per record (jvm/flink-ops, a jar of small classes).

In thread mode every Python operator of a task shares one interpreter. PyFlink's
``key_by(fn)`` puts a Python operator after each source (``Row(fn(x), x)``), so the sources
took the GIL from the join function for every record (docs/joiner.md, "where the joiner's
time goes"). Here the same ``Row(key, value)`` comes from a Java map chained to the source,
and the stream is keyed exactly as PyFlink keys it (``KeyByKeySelector`` on field 0), so the
Python functions downstream see what they saw before and the keys are the same values:
checkpoints taken with either keying restore with the other.

The jar is compiled with ``javac`` against the Flink jars of the installed PyFlink wheel the
first time a job needs it (``streamtrain jars`` builds it too) and named by a digest of its
sources and the Flink version, so an edited source or another PyFlink builds a new one.
Without a JDK the jobs key in Python as before (a warning says so; ``flink.jvm_ops=false``
asks for that explicitly).

    jar = ops_jar()                                   # infra/jars/flink/streamtrain-flink-ops-<digest>.jar
    keyed = key_by_jvm(stream, "JoinBucket", Types.INT(), 128)   # None: the class is not loaded
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from schemas import Action, Impression, codec_for
from schemas.validation import ValidationLimits
from streamtrain.paths import JARS_DIR, REPO_ROOT

log = logging.getLogger(__name__)
SOURCES = REPO_ROOT / "jvm" / "flink-ops" / "src" / "main" / "java"
PACKAGE = "streamtrain.flink"
JAR_PREFIX = "streamtrain-flink-ops-"


class OpsBuildError(RuntimeError):
    """javac rejected the sources of jvm/flink-ops (a bug of ours, not of the machine)."""


def _pyflink_lib() -> Path:
    spec = importlib.util.find_spec("pyflink")
    assert spec is not None and spec.origin is not None, "pyflink is not installed"
    return Path(spec.origin).parent / "lib"


def _digest(sources: list[Path], flink_jars: list[Path]) -> str:
    h = hashlib.sha256()
    for src in sources:
        h.update(src.name.encode())
        h.update(src.read_bytes())
    for jar in flink_jars:
        h.update(jar.name.encode())
    return h.hexdigest()[:12]


def ops_jar(jars_dir: Path = JARS_DIR / "flink", build: bool = True) -> Path | None:
    """The jar of jvm/flink-ops, compiled now if it is missing or its sources changed; None
    when it cannot be built here (no ``javac``, no sources) or ``build`` is false and it is
    not built yet. Older builds in ``jars_dir`` are removed."""
    sources = sorted(SOURCES.rglob("*.java"))
    if not sources:
        return None
    flink_jars = sorted(_pyflink_lib().glob("flink-dist-*.jar"))
    jar = jars_dir / f"{JAR_PREFIX}{_digest(sources, flink_jars)}.jar"
    if jar.exists() or not build:
        return jar if jar.exists() else None
    javac, jar_tool = shutil.which("javac"), shutil.which("jar")
    if javac is None or jar_tool is None or not flink_jars:
        log.warning("cannot build %s (%s): the jobs key their streams in Python (slower)", jar.name,
                    "no javac/jar on PATH: install a JDK 17" if flink_jars else
                    f"no flink-dist jar in {_pyflink_lib()}")
        return None
    jars_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="flink-ops-") as tmp:
        classes = Path(tmp) / "classes"
        res = subprocess.run([javac, "--release", "17", "-nowarn", "-cp", str(flink_jars[-1]),
                              "-d", str(classes), *map(str, sources)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise OpsBuildError(f"javac failed on {SOURCES}:\n{res.stdout}{res.stderr}")
        # staged beside its final name, then renamed: whole or not at all, since another
        # job starting at the same time may be building or reading it too
        fd, staged_name = tempfile.mkstemp(prefix=f".{jar.stem}-", suffix=".jar", dir=jars_dir)
        os.close(fd)
        staged = Path(staged_name)
        try:
            res = subprocess.run([jar_tool, "--create", "--file", str(staged), "-C", str(classes),
                                  "."], capture_output=True, text=True)
            if res.returncode != 0:
                raise OpsBuildError(f"jar failed: {res.stdout}{res.stderr}")
            for old in jars_dir.glob(f"{JAR_PREFIX}*.jar"):
                if old.name != jar.name:
                    old.unlink(missing_ok=True)
            staged.chmod(0o644)  # mkstemp's 0600 would keep other users' TaskManagers out
            os.replace(staged, jar)
        finally:
            staged.unlink(missing_ok=True)
    log.info("built %s", jar)
    return jar


def ops_class(name: str) -> Any | None:
    """The Java class ``streamtrain.flink.<name>`` through PyFlink's gateway, or None when the
    jar is not on the job's classpath (``make_env`` adds it)."""
    from py4j.java_gateway import JavaClass
    from pyflink.java_gateway import get_gateway

    cls = getattr(get_gateway().jvm, f"{PACKAGE}.{name}")
    return cls if isinstance(cls, JavaClass) else None


def key_by_jvm(stream: Any, op: str, key_type: Any, *args: Any) -> Any | None:
    """``stream.key_by(...)`` with the key computed by the Java map ``streamtrain.flink.<op>``
    (constructed with ``args``; it returns ``Row(key, value)``), chained to ``stream``'s
    operator. None when the class is not loaded (the caller keys in Python then).

    What PyFlink's ``DataStream.key_by`` builds, minus its Python operator: the Row stream is
    keyed by ``KeyByKeySelector`` (field 0, as a one-field Row), so the keyed Python function
    downstream receives the same rows and keys."""
    from pyflink.common import Types
    from pyflink.common.typeinfo import _from_java_type
    from pyflink.datastream import KeyedStream
    from pyflink.java_gateway import get_gateway

    cls = ops_class(op)
    if cls is None:
        return None
    j_stream = stream._j_data_stream
    value_type = _from_java_type(j_stream.getTransformation().getOutputType())
    rows = j_stream.map(cls(*args), Types.ROW([key_type, value_type]).get_java_type_info()) \
        .name(f"key:{op}")
    j_keyed = rows.keyBy(get_gateway().jvm.KeyByKeySelector(),
                         Types.ROW([key_type]).get_java_type_info())
    return KeyedStream(j_keyed, value_type, stream)


def stamp_event_time_jvm(flink: Any, stream: Any, action: bool) -> Any | None:
    """``stream`` (Impression or Action bytes) with each record's timestamp set to its
    event_time_ms by ``streamtrain.flink.EventTimeStamp`` (no watermarks); None when
    ``flink.jvm_ops`` is off or the class is not loaded (the caller stamps in Python then)."""
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway

    cls = ops_class("EventTimeStamp") if flink.jvm_ops else None
    if cls is None:
        return None
    strategy = get_gateway().jvm.org.apache.flink.api.common.eventtime.WatermarkStrategy \
        .noWatermarks().withTimestampAssigner(cls(action))
    return DataStream(stream._j_data_stream.assignTimestampsAndWatermarks(strategy))


def keyed_in_jvm(flink: Any, streams: tuple[Any, ...], op: str, key_type: Any, *args: Any) -> Any | None:
    """The streams keyed by ``key_by_jvm`` (two streams: connected, as
    ``a.connect(b).key_by(...)`` gives), or None when ``flink.jvm_ops`` is off or the jar is
    not loaded; the caller keys in Python then."""
    from pyflink.datastream import ConnectedStreams

    if not flink.jvm_ops:
        return None
    keyed = [key_by_jvm(s, op, key_type, *args) for s in streams]
    if any(k is None for k in keyed):
        log.warning("streamtrain.flink.%s is not on the classpath (no %s*.jar): keying in Python",
                    op, JAR_PREFIX)
        return None
    return ConnectedStreams(*keyed) if len(keyed) == 2 else keyed[0]


def _java_array(gateway: Any, kind: Any, values: Any) -> Any:
    """A Java array of ``kind`` (``gateway.jvm.String``, ``gateway.jvm.int``, a class) holding
    ``values``."""
    arr = gateway.new_array(kind, len(values))
    for i, v in enumerate(values):
        arr[i] = v
    return arr


def _headers(headers: frozenset[bytes]) -> bytes:
    """A codec's 10-byte headers one after another, as the Java classes read them."""
    return b"".join(sorted(headers))


def screen(limits: ValidationLimits | None) -> Any:
    """``streamtrain.flink.Screen`` for the record gate of ``limits`` (the defaults when
    None): which records the sort lets through at once because the gate may reject them."""
    from pyflink.java_gateway import get_gateway

    limits = ValidationLimits() if limits is None else limits
    gateway = get_gateway()
    types = None if limits.action_types is None else \
        _java_array(gateway, gateway.jvm.String, limits.action_types)
    cls = ops_class("Screen")
    assert cls is not None, "callers check the jar is loaded"
    imp, act = codec_for(Impression), codec_for(Action)
    return cls(_headers(imp.own_headers), _headers(imp.known_headers),
               _headers(act.own_headers), _headers(act.known_headers),
               limits.min_event_time_ms or 0, limits.max_future_ms,
               -1 if limits.max_past_ms is None else limits.max_past_ms, types)


def _sorted_keyed(j_rows: Any, key_type: Any, value_type: Any, origin: Any, name: str,
                  gate: Any = None, counter_group: tuple[str, ...] = ()) -> Any:
    """Row(key, value) rows keyed as ``key_by_jvm`` keys them, each key's records released
    in event-time order by ``streamtrain.flink.EventTimeSort`` (``gate``: its Screen, the
    records it suspects pass at once; ``counter_group``: where it counts its input), the
    result re-read as keyed by the same key (no shuffle: the sort and the Python step
    downstream chain)."""
    from pyflink.common import Types
    from pyflink.datastream import KeyedStream
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    row_type = Types.ROW([key_type, value_type]).get_java_type_info()
    key_info = Types.ROW([key_type]).get_java_type_info()
    sort = ops_class("EventTimeSort")
    assert sort is not None, "callers check the class is loaded"
    group = _java_array(gateway, gateway.jvm.String, counter_group)
    j_sorted = j_rows.keyBy(gateway.jvm.KeyByKeySelector(), key_info) \
        .process(sort(row_type, gate, group), row_type).name(f"event-time-sort:{name}").uid(f"event-time-sort-{name}")
    j_keyed = gateway.jvm.org.apache.flink.streaming.api.datastream.DataStreamUtils \
        .reinterpretAsKeyedStream(j_sorted, gateway.jvm.KeyByKeySelector(), key_info)
    return KeyedStream(j_keyed, value_type, origin)


def users_in_order(flink: Any, impressions: Any, actions: Any, value_type: Any,
                   limits: ValidationLimits | None = None) -> Any | None:
    """Both inputs of the feature job's user step as one stream keyed by user: (kind, 0,
    bytes) records (kind 0 an impression, 1 an action; ``streamtrain.flink.KindUserKey``),
    each user's in event-time order once the watermark passes them, except records the
    step's gate (``limits``) may reject: those pass at once (``screen``). The input is
    counted on arrival as ``features.user.impressions_in`` / ``actions_in``. None when
    ``flink.jvm_ops`` is off or the jar is not loaded (the step then waits with timers)."""
    from pyflink.common import Types

    cls = ops_class("KindUserKey") if flink.jvm_ops else None
    if cls is None or ops_class("EventTimeSort") is None or ops_class("Screen") is None:
        return None
    row_type = Types.ROW([Types.LONG(), value_type]).get_java_type_info()
    j_rows = [s._j_data_stream.map(cls(kind), row_type).name("key:KindUserKey")
              for kind, s in enumerate((impressions, actions))]
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    others = _java_array(gateway, gateway.jvm.org.apache.flink.streaming.api.datastream.DataStream,
                         j_rows[1:])
    return _sorted_keyed(j_rows[0].union(others), Types.LONG(), value_type, impressions, "user",
                         screen(limits), ("features", "user"))


def field_in_order(flink: Any, stream: Any, field: int, value_type: Any, name: str) -> Any | None:
    """A (kind, id, bytes) tuple stream keyed by its ``field`` (``streamtrain.flink.FieldKey``),
    each key's records in event-time order once the watermark passes them; None as
    ``users_in_order``."""
    from pyflink.common import Types

    cls = ops_class("FieldKey") if flink.jvm_ops else None
    if cls is None or ops_class("EventTimeSort") is None:
        return None
    row_type = Types.ROW([Types.LONG(), value_type]).get_java_type_info()
    j_rows = stream._j_data_stream.map(cls(field), row_type).name("key:FieldKey")
    return _sorted_keyed(j_rows, Types.LONG(), value_type, stream, name)


def item_features_jvm(stream: Any, spec: Any, tags: tuple[Any, Any, Any]) -> Any | None:
    """The feature job's item step in the JVM (``streamtrain.flink.ItemFeatures``) on
    ``stream``, the user step's records keyed by item in event-time order
    (``field_in_order``): enriched impression bytes on the main output; ``tags`` (actions,
    FeatureUpdates, dead letters) its side outputs, as ``ItemFeatureFunction(ordered=True)``
    writes them. None when the class is not loaded (the Python step runs then)."""
    from pyflink.common import Types
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway

    from schemas import DeadLetter
    from schemas.splice import feature_update_parts
    from streaming.dead_letters import REASONS

    cls = ops_class("ItemFeatures")
    if cls is None:
        return None
    gateway = get_gateway()
    jvm = gateway.jvm
    feats = spec.features("item")
    events = list(spec.events)
    prefix, names = feature_update_parts("item", spec.names("item"))
    # a DeadLetter of the item step up to its reason: stage, source topic, partition, offset
    dead = codec_for(DeadLetter).encode(DeadLetter(stage="features", source_topic="user-step", reason="",
                                                   time_ms=0, raw=b""))[:-3]
    fn = cls(_headers(codec_for(Impression).own_headers), _headers(codec_for(Action).own_headers),
             _java_array(gateway, jvm.String, events),
             _java_array(gateway, jvm.int, [0 if f.kind == "count" else 1 for f in feats]),
             _java_array(gateway, jvm.int, [events.index(f.event) for f in feats]),
             _java_array(gateway, jvm.long, [f.window_ms for f in feats]),
             _java_array(gateway, jvm.boolean, [spec.log1p_counts and f.kind == "count" for f in feats]),
             spec.ctr_prior * spec.ctr_strength, float(spec.ctr_strength),
             max(spec.max_window_ms, spec.dedup_ttl_ms) + 1, prefix, names, dead,
             _java_array(gateway, jvm.String, list(REASONS)),
             *(tag.get_java_output_tag() for tag in tags))
    return DataStream(stream._j_data_stream.process(fn, Types.PRIMITIVE_ARRAY(Types.BYTE())
                                                    .get_java_type_info()))
