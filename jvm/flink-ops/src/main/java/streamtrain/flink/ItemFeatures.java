package streamtrain.flink;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.streaming.api.TimerService;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * The feature job's item step, whole in the JVM: Row(item, (kind, item, bytes)) records of
 * the user step, each item's in event-time order ({@link EventTimeSort} in front). The twin of
 * streaming/features/flink_functions.py's ItemFeatureFunction(ordered=True) with
 * FeatureStep.on_ordered / on_ordered_impression_at: the same outputs, record for record
 * (tests/streaming/features/test_job.py runs both).
 *
 * <p>An impression gets the item's values as of its event time (events strictly before it,
 * windows aged to it) appended to its dense array in its bytes (counts as log1p when
 * configured, as float32), leaves on the main output, and its FeatureUpdate on the
 * feature-updates side output; then it joins the item's history. An action joins the history
 * and leaves unchanged on the actions side output. After each record the history is pruned
 * to the largest window; a cleanup tick (one per key at a time, on the minute) drops a key
 * whose history aged out. Bytes not of the codec's layout (a bug upstream) are dead-lettered.
 *
 * <p>The feature list comes from the spec (streaming/features/spec.py) as parallel arrays:
 * per feature its kind (0 count, 1 ctr), event index (0 = impressions, then the action types)
 * and window. The counters are the Python step's, under {@code features.item}.
 */
public final class ItemFeatures extends KeyedProcessFunction<Row, Row, byte[]> {
    private static final long serialVersionUID = 1L;
    private static final int KIND_IMPRESSION = 0;
    private static final long TICK_MS = 60_000L;
    private static final String[] COUNTERS = {
        "impressions_in", "actions_in", "impressions_out", "actions_out", "feature_updates",
        "entities_created", "entities_dropped", "dead_letters", "impressions", "actions",
        "duplicate_impressions", "duplicate_actions", "late_impressions", "enriched"};

    private final byte[] ownHeaders;          // Impression headers (10 bytes each) of the codec's own schema
    private final byte[] actionHeaders;       // the same for Action
    private final String[] events;            // "imp", then the action types
    private final int[] kinds;
    private final int[] eventOf;
    private final long[] windows;
    private final boolean[] log1p;
    private final double ctrPseudo;           // ctr_prior * ctr_strength, as Python computes it
    private final double ctrStrength;
    private final long maxWindowMs;
    private final long cleanupAfterMs;        // max(max window, dedup ttl) + 1
    private final byte[] updatePrefix;        // FeatureUpdate header, schema_version, entity_type
    private final byte[] updateNames;         // its names array, encoded
    private final byte[] deadLetterPrefix;    // DeadLetter header, schema_version, stage, source topic, -1, -1
    private final String[] reasonKeys;
    private final OutputTag<byte[]> actionsTag;
    private final OutputTag<byte[]> updatesTag;
    private final OutputTag<byte[]> deadLetterTag;

    private transient ValueState<long[]>[] times;   // per event: [n, t1 <= ... <= tn, slack]
    private transient ValueState<Long> cleanup;
    private transient Map<String, Counter> counters;
    private transient Map<String, Integer> eventIndex;
    private transient long entitiesCreated;
    private transient long entitiesDropped;

    public ItemFeatures(byte[] ownHeaders, byte[] actionHeaders, String[] events, int[] kinds,
                        int[] eventOf, long[] windows, boolean[] log1p, double ctrPseudo,
                        double ctrStrength, long cleanupAfterMs, byte[] updatePrefix,
                        byte[] updateNames, byte[] deadLetterPrefix, String[] reasonKeys,
                        OutputTag<byte[]> actionsTag, OutputTag<byte[]> updatesTag,
                        OutputTag<byte[]> deadLetterTag) {
        this.ownHeaders = ownHeaders.clone();
        this.actionHeaders = actionHeaders.clone();
        this.events = events.clone();
        this.kinds = kinds.clone();
        this.eventOf = eventOf.clone();
        this.windows = windows.clone();
        this.log1p = log1p.clone();
        this.ctrPseudo = ctrPseudo;
        this.ctrStrength = ctrStrength;
        this.maxWindowMs = Arrays.stream(windows).max().orElse(0L);
        this.cleanupAfterMs = cleanupAfterMs;
        this.updatePrefix = updatePrefix.clone();
        this.updateNames = updateNames.clone();
        this.deadLetterPrefix = deadLetterPrefix.clone();
        this.reasonKeys = reasonKeys.clone();
        this.actionsTag = actionsTag;
        this.updatesTag = updatesTag;
        this.deadLetterTag = deadLetterTag;
    }

    @Override
    @SuppressWarnings("unchecked")
    public void open(OpenContext context) {
        times = new ValueState[events.length];
        eventIndex = new HashMap<>();
        for (int e = 0; e < events.length; e++) {
            times[e] = getRuntimeContext().getState(
                    new ValueStateDescriptor<>("item-times-" + events[e], PrimitiveArrayTypeInfo.LONG_PRIMITIVE_ARRAY_TYPE_INFO));
            eventIndex.put(events[e], e);
        }
        cleanup = getRuntimeContext().getState(new ValueStateDescriptor<>("item-cleanup", Types.LONG));
        MetricGroup group = getRuntimeContext().getMetricGroup().addGroup("features").addGroup("item");
        counters = new HashMap<>();
        for (String name : COUNTERS) {
            counters.put(name, group.counter(name));
        }
        for (String key : reasonKeys) {
            counters.put("dead_letters_" + key, group.counter("dead_letters_" + key));
        }
        group.gauge("entities", (Gauge<Long>) () -> Math.max(0L, entitiesCreated - entitiesDropped));
    }

    private void inc(String name) {
        counters.get(name).inc();
    }

    @Override
    @SuppressWarnings("unchecked")
    public void processElement(Row row, Context ctx, Collector<byte[]> out) throws Exception {
        Object value = row.getField(1);
        Tuple3<Integer, Long, byte[]> t = value instanceof Tuple3 ? (Tuple3<Integer, Long, byte[]>) value : null;
        byte[] raw = t == null ? null : t.f2;
        boolean impression = t != null && t.f0 != null && t.f0 == KIND_IMPRESSION;
        inc(impression ? "impressions_in" : "actions_in");
        if (raw == null || t.f1 == null) {
            deadLetter(ctx, raw, "undecodable: no item record");
            return;
        }
        long item = t.f1;
        if (impression) {
            int[] layout = impressionDense(raw);
            if (layout == null) {
                deadLetter(ctx, raw, "undecodable: not an Impression of this job's schema and layout");
                return;
            }
            long time = longAt(raw, layout[0]);
            boolean fresh = isNew();
            add(0, time);
            double[] values = values(time);
            prune(time);
            inc("impressions");
            inc("enriched");
            out.collect(withDense(raw, layout[1], layout[2], values));
            inc("impressions_out");
            ctx.output(updatesTag, featureUpdate(item, time, values));
            inc("feature_updates");
            afterRecord(ctx, fresh);
        } else {
            int[] at = actionTypeAndTime(raw);
            Integer event = at == null ? null : eventIndex.get(
                    new String(raw, at[0], at[1], StandardCharsets.UTF_8));
            if (event == null) {
                deadLetter(ctx, raw, "undecodable: not an Action of this job's schema and action types");
                return;
            }
            long time = longAt(raw, at[2]);
            boolean fresh = isNew();
            add(event, time);
            prune(time);
            inc("actions");
            ctx.output(actionsTag, raw);
            inc("actions_out");
            afterRecord(ctx, fresh);
        }
    }

    private boolean isNew() throws Exception {
        return cleanup.value() == null;
    }

    /** A new key counted, and its cleanup tick registered: a key holds one at a time (onTimer
     * registers the next), so a key with a tick is not new. */
    private void afterRecord(Context ctx, boolean fresh) throws Exception {
        if (fresh) {
            entitiesCreated++;
            inc("entities_created");
            registerCleanup(ctx.timerService());
        }
    }

    private void registerCleanup(TimerService timers) throws Exception {
        long due = newest() + cleanupAfterMs;
        long tick = Math.floorDiv(due + TICK_MS - 1, TICK_MS) * TICK_MS;
        timers.registerEventTimeTimer(tick);
        cleanup.update(tick);
    }

    @Override
    public void onTimer(long timestamp, OnTimerContext ctx, Collector<byte[]> out) throws Exception {
        Long registered = cleanup.value();
        prune(timestamp);
        if (newest() == Long.MIN_VALUE) {
            for (ValueState<long[]> state : times) {
                state.clear();
            }
            cleanup.clear();
            entitiesDropped++;
            inc("entities_dropped");
            return;
        }
        if (registered != null && registered <= timestamp) {
            registerCleanup(ctx.timerService());
        }
    }

    // ---- the history: per event a sorted array of times, [n, t1..tn, slack] ------------------

    private void add(int event, long time) throws Exception {
        long[] ts = times[event].value();
        if (ts == null) {
            ts = new long[5];
        }
        int n = (int) ts[0];
        if (n + 2 > ts.length) {
            ts = Arrays.copyOf(ts, Math.max(5, 2 * ts.length));
        }
        int at = n + 1;
        if (n > 0 && ts[n] > time) {
            at = upper(ts, n, time) + 1;           // after equal times, as insort
            System.arraycopy(ts, at, ts, at + 1, n + 1 - at);
        }
        ts[at] = time;
        ts[0] = n + 1;
        times[event].update(ts);
    }

    /** How many of ts[1..n] are < value. */
    private static int lower(long[] ts, int n, long value) {
        int lo = 0;
        int hi = n;
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            if (ts[mid + 1] < value) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        return lo;
    }

    /** How many of ts[1..n] are <= value. */
    private static int upper(long[] ts, int n, long value) {
        int lo = 0;
        int hi = n;
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            if (ts[mid + 1] <= value) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        return lo;
    }

    private int count(int event, long start, long end, long[][] cache) throws Exception {
        long[] ts = cache[event];
        if (ts == null) {
            ts = times[event].value();
            if (ts == null) {
                return 0;
            }
            cache[event] = ts;
        }
        int n = (int) ts[0];
        return lower(ts, n, end) - lower(ts, n, start);
    }

    /** The raw values of every feature as of {@code time} (events < time): EntityState.values. */
    private double[] values(long time) throws Exception {
        double[] out = new double[kinds.length];
        long[][] cache = new long[events.length][];
        for (int f = 0; f < kinds.length; f++) {
            long w = windows[f];
            if (kinds[f] == 0) {
                out[f] = count(eventOf[f], time - w, time, cache);
            } else {
                int imps = count(0, time - w, time, cache);
                int hits = count(eventOf[f], time - w, time, cache);
                out[f] = (hits + ctrPseudo) / (imps + ctrStrength);
            }
        }
        return out;
    }

    /** Drop events older than the largest window before {@code time}: EntityState.prune. */
    private void prune(long time) throws Exception {
        long cutoff = time - maxWindowMs;
        for (ValueState<long[]> state : times) {
            long[] ts = state.value();
            if (ts == null) {
                continue;
            }
            int n = (int) ts[0];
            int drop = lower(ts, n, cutoff);
            if (drop == 0) {
                continue;
            }
            if (drop == n) {
                state.clear();
                continue;
            }
            System.arraycopy(ts, drop + 1, ts, 1, n - drop);
            ts[0] = n - drop;
            state.update(ts);
        }
    }

    /** The latest event time held, Long.MIN_VALUE when none. */
    private long newest() throws Exception {
        long newest = Long.MIN_VALUE;
        for (ValueState<long[]> state : times) {
            long[] ts = state.value();
            if (ts != null && ts[0] > 0) {
                newest = Math.max(newest, ts[(int) ts[0]]);
            }
        }
        return newest;
    }

    // ---- bytes ------------------------------------------------------------------------------

    private static long longAt(byte[] raw, int pos) {
        int[] end = new int[1];
        boolean[] fits = new boolean[1];
        return Peek.zigzag(raw, pos, end, fits);
    }

    /** Position past the one-block (or empty) array of varints at pos; -1 otherwise. */
    private static int skipVarintArray(byte[] raw, int pos) {
        int[] end = new int[1];
        boolean[] fits = new boolean[1];
        long n = Peek.zigzag(raw, pos, end, fits);
        if (end[0] < 0 || !fits[0] || n < 0) {
            return -1;
        }
        pos = end[0];
        if (n == 0) {
            return pos;
        }
        for (long i = 0; i < n && pos >= 0; i++) {
            pos = Peek.varintEnd(raw, pos);
        }
        return pos < 0 || pos >= raw.length || raw[pos] != 0 ? -1 : pos + 1;
    }

    /**
     * {event_time_ms position, dense position, dense count} of an Impression of the codec's
     * own schema with a one-block (or empty) dense array ending the bytes; null otherwise
     * (schemas.splice.impression_dense).
     */
    private int[] impressionDense(byte[] raw) {
        int pos = Peek.hasHeader(ownHeaders, raw) ? Peek.afterIds(raw) : -1;
        if (pos < 0) {
            return null;
        }
        int timeAt = pos;
        pos = Peek.varintEnd(raw, pos);
        pos = pos < 0 ? -1 : skipVarintArray(raw, pos);                // slots
        pos = pos < 0 ? -1 : skipVarintArray(raw, pos);                // ids
        if (pos < 0) {
            return null;
        }
        int[] end = new int[1];
        boolean[] fits = new boolean[1];
        long count = Peek.zigzag(raw, pos, end, fits);
        if (end[0] < 0 || !fits[0] || count < 0
                || end[0] + 4 * count + (count > 0 ? 1 : 0) != raw.length) {
            return null;
        }
        return new int[] {timeAt, pos, (int) count};
    }

    /** {action_type start, its length, event_time_ms position} of an Action of the codec's own schema; null otherwise. */
    private int[] actionTypeAndTime(byte[] raw) {
        int pos = Peek.hasHeader(actionHeaders, raw) ? Peek.afterIds(raw) : -1;
        if (pos < 0) {
            return null;
        }
        int[] end = new int[1];
        boolean[] fits = new boolean[1];
        long n = Peek.zigzag(raw, pos, end, fits);
        if (end[0] < 0 || !fits[0] || n < 0 || n > raw.length - end[0]) {
            return null;
        }
        int timeAt = end[0] + (int) n;
        int after = Peek.varintEnd(raw, timeAt);
        if (after < 0 || after + 4 != raw.length) {   // value: a float, the last field
            return null;
        }
        return new int[] {end[0], (int) n, timeAt};
    }

    private static void writeLong(ByteArrayOutputStream out, long value) {
        long n = (value << 1) ^ (value >> 63);
        while ((n & ~0x7FL) != 0) {
            out.write((int) ((n & 0x7F) | 0x80));
            n >>>= 7;
        }
        out.write((int) n);
    }

    /** The impression with the values appended to its dense array (schemas.splice.impression_with_dense). */
    private byte[] withDense(byte[] raw, int denseAt, int count, double[] values) {
        if (values.length == 0) {
            return raw;
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream(raw.length + 5 * values.length + 4);
        out.write(raw, 0, denseAt);
        writeLong(out, count + values.length);
        if (count > 0) {
            int start = Peek.varintEnd(raw, denseAt);
            out.write(raw, start, raw.length - 1 - start);
        }
        ByteBuffer floats = ByteBuffer.allocate(4 * values.length).order(ByteOrder.LITTLE_ENDIAN);
        for (int f = 0; f < values.length; f++) {
            floats.putFloat((float) (log1p[f] ? Math.log1p(values[f]) : values[f]));
        }
        out.write(floats.array(), 0, floats.capacity());
        out.write(0);
        return out.toByteArray();
    }

    /** The FeatureUpdate message (schemas.splice.feature_update_bytes): no last items for an item. */
    private byte[] featureUpdate(long item, long time, double[] values) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(updatePrefix.length + updateNames.length
                + 8 * values.length + 24);
        out.write(updatePrefix, 0, updatePrefix.length);
        writeLong(out, item);
        writeLong(out, time);
        out.write(updateNames, 0, updateNames.length);
        if (values.length > 0) {
            writeLong(out, values.length);
            ByteBuffer doubles = ByteBuffer.allocate(8 * values.length).order(ByteOrder.LITTLE_ENDIAN);
            for (double v : values) {
                doubles.putDouble(v);
            }
            out.write(doubles.array(), 0, doubles.capacity());
        }
        out.write(0);   // values' end (or an empty array)
        out.write(0);   // last_items: empty
        return out.toByteArray();
    }

    private void deadLetter(Context ctx, byte[] raw, String reason) {
        byte[] body = raw == null ? new byte[0] : raw;
        byte[] why = reason.getBytes(StandardCharsets.UTF_8);
        ByteArrayOutputStream out = new ByteArrayOutputStream(deadLetterPrefix.length + why.length + body.length + 24);
        out.write(deadLetterPrefix, 0, deadLetterPrefix.length);
        writeLong(out, why.length);
        out.write(why, 0, why.length);
        writeLong(out, System.currentTimeMillis());
        writeLong(out, body.length);
        out.write(body, 0, body.length);
        ctx.output(deadLetterTag, out.toByteArray());
        inc("dead_letters");
        inc("dead_letters_undecodable");
    }
}
