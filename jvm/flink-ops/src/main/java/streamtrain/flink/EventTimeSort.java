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
 * cannot be read (the step dead-letters it).
 */
public final class EventTimeSort extends KeyedProcessFunction<Row, Row, Row> {
    private static final long serialVersionUID = 1L;
    public static final int KIND_ACTION = 1;
    private final TypeInformation<Row> rowType;
    private transient MapState<Long, List<Row>> waiting;
    private transient Counter late;

    public EventTimeSort(TypeInformation<Row> rowType) {
        this.rowType = rowType;
    }

    @Override
    public void open(OpenContext context) {
        waiting = getRuntimeContext().getMapState(
                new MapStateDescriptor<>("event-time-sort", Types.LONG, Types.LIST(rowType)));
        late = getRuntimeContext().getMetricGroup().counter("late_records");
    }

    /** The record's event_time_ms, or Long.MIN_VALUE when its bytes do not give one. */
    @SuppressWarnings("unchecked")
    static long eventTime(Row row) {
        Object value = row.getField(1);
        if (!(value instanceof Tuple3)) {
            return Long.MIN_VALUE;
        }
        Tuple3<Integer, Long, byte[]> t = (Tuple3<Integer, Long, byte[]>) value;
        if (t.f2 == null || t.f0 == null) {
            return Long.MIN_VALUE;
        }
        return EventTimeStamp.eventTime(t.f2, t.f0 == KIND_ACTION, Long.MIN_VALUE);
    }

    @Override
    public void processElement(Row row, Context ctx, org.apache.flink.util.Collector<Row> out)
            throws Exception {
        long time = eventTime(row);
        if (time == Long.MIN_VALUE) {
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
