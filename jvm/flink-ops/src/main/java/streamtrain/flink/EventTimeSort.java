package streamtrain.flink;

import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.types.Row;

/**
 * Releases each key's records in event-time order once the watermark has passed their
 * event time: Row(key, (kind, id, bytes)) where kind 0 is an Impression message and kind 1
 * an Action message; the event time is the message's event_time_ms.
 *
 * <p>The feature steps wait for the watermark before they attach an impression's features
 * (so every event before it has arrived). Done in Python that cost an event-time timer per
 * record and a call into Python when it fired; here the records wait in Flink keyed state
 * (one timer per key and event time) and the Python step takes each one as it comes.
 *
 * <p>Records of the same event time leave in arrival order. A record at or behind the
 * watermark leaves at once (counted: {@code late_records}); so does one whose event time
 * cannot be read, and one the {@link Screen} finds the step's record gate may reject
 * (counted: {@code screened_records}): the step dead-letters it on arrival, not once the
 * watermark passes it.
 *
 * <p>With a counter group ({@code "features", "user"}) the input is counted on arrival, as
 * the Python step counted it before it waited: {@code impressions_in}, {@code actions_in}
 * under that group.
 */
public final class EventTimeSort extends KeyedProcessFunction<Row, Row, Row> {
    private static final long serialVersionUID = 1L;
    public static final int KIND_ACTION = 1;
    private final TypeInformation<Row> rowType;
    private transient MapState<Long, List<Row>> waiting;
    private final Screen screen;
    private final String[] counterGroup;
    private transient Counter late;
    private transient Counter screened;
    private transient Counter[] arrived;

    public EventTimeSort(TypeInformation<Row> rowType) {
        this(rowType, null, new String[0]);
    }

    /**
     * @param screen       null: every record with an event time waits
     * @param counterGroup the metric group of the arrival counters; empty: not counted
     */
    public EventTimeSort(TypeInformation<Row> rowType, Screen screen, String[] counterGroup) {
        this.rowType = rowType;
        this.screen = screen;
        this.counterGroup = counterGroup.clone();
    }

    @Override
    public void open(OpenContext context) {
        waiting = getRuntimeContext().getMapState(
                new MapStateDescriptor<>("event-time-sort", Types.LONG, Types.LIST(rowType)));
        MetricGroup metrics = getRuntimeContext().getMetricGroup();
        late = metrics.counter("late_records");
        screened = metrics.counter("screened_records");
        if (counterGroup.length > 0) {
            MetricGroup group = metrics;
            for (String name : counterGroup) {
                group = group.addGroup(name);
            }
            arrived = new Counter[] {group.counter("impressions_in"), group.counter("actions_in")};
        }
    }

    @SuppressWarnings("unchecked")
    private static Tuple3<Integer, Long, byte[]> value(Row row) {
        Object value = row.getField(1);
        return value instanceof Tuple3 ? (Tuple3<Integer, Long, byte[]>) value : null;
    }

    /** The record's event_time_ms, or Long.MIN_VALUE when its bytes do not give one. */
    static long eventTime(Tuple3<Integer, Long, byte[]> t) {
        if (t == null || t.f2 == null || t.f0 == null) {
            return Long.MIN_VALUE;
        }
        return EventTimeStamp.eventTime(t.f2, t.f0 == KIND_ACTION, Long.MIN_VALUE);
    }

    @Override
    public void processElement(Row row, Context ctx, org.apache.flink.util.Collector<Row> out)
            throws Exception {
        Tuple3<Integer, Long, byte[]> t = value(row);
        if (arrived != null && t != null && t.f0 != null) {
            arrived[t.f0 == KIND_ACTION ? 1 : 0].inc();
        }
        long time = eventTime(t);
        if (time == Long.MIN_VALUE) {
            out.collect(row);
            return;
        }
        if (screen != null && screen.suspect(t.f2, t.f0, ctx.timerService().currentProcessingTime())) {
            screened.inc();
            out.collect(row);
            return;
        }
        if (time <= ctx.timerService().currentWatermark()) {
            late.inc();
            out.collect(row);
            return;
        }
        List<Row> rows = waiting.get(time);
        if (rows == null) {
            rows = new ArrayList<>(1);
            ctx.timerService().registerEventTimeTimer(time);
        }
        rows.add(row);
        waiting.put(time, rows);
    }

    @Override
    public void onTimer(long timestamp, OnTimerContext ctx, org.apache.flink.util.Collector<Row> out)
            throws Exception {
        List<Row> rows = waiting.get(timestamp);
        if (rows == null) {
            return;
        }
        for (Row row : rows) {
            out.collect(row);
        }
        waiting.remove(timestamp);
    }
}
