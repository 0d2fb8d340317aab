package streamtrain.flink;

import org.apache.flink.api.common.eventtime.SerializableTimestampAssigner;

/**
 * An Impression's or an Action's event_time_ms as its record timestamp (the Kafka sink writes
 * it as the message timestamp); the record's own timestamp for unreadable bytes. The twin of
 * streaming/features/flink_functions.py's EventTimeStamp.
 */
public final class EventTimeStamp implements SerializableTimestampAssigner<byte[]> {
    private static final long serialVersionUID = 1L;
    private final boolean action;

    public EventTimeStamp(boolean action) {
        this.action = action;
    }

    /** event_time_ms, or {@code fallback} when the bytes end first or it exceeds a long. */
    public static long eventTime(byte[] raw, boolean action, long fallback) {
        int pos = Peek.afterIds(raw);
        if (pos < 0) {
            return fallback;
        }
        int[] end = new int[1];
        boolean[] fits = new boolean[1];
        if (action) {   // action_type, a string
            long n = Peek.zigzag(raw, pos, end, fits);
            if (end[0] < 0 || !fits[0] || n < 0 || n > raw.length - end[0]) {
                return fallback;
            }
            pos = end[0] + (int) n;
        }
        long time = Peek.zigzag(raw, pos, end, fits);
        return end[0] < 0 || !fits[0] ? fallback : time;
    }

    @Override
    public long extractTimestamp(byte[] raw, long recordTimestamp) {
        return eventTime(raw, action, recordTimestamp);
    }
}
