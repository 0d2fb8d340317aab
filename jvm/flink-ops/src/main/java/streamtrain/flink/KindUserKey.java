package streamtrain.flink;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.types.Row;

/**
 * Row(user_id, (kind, 0, bytes)) of an Impression (kind 0) / Action (kind 1) message: one
 * input of the feature job's user step when it takes its records in event-time order
 * ({@link EventTimeSort}); the key as {@link UserKey} gives it.
 */
public final class KindUserKey implements MapFunction<byte[], Row> {
    private static final long serialVersionUID = 1L;
    private final int kind;

    public KindUserKey(int kind) {
        this.kind = kind;
    }

    @Override
    public Row map(byte[] raw) {
        return Row.of(UserKey.userId(raw), Tuple3.of(kind, 0L, raw));
    }
}
