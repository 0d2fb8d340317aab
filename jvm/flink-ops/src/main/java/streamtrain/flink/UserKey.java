package streamtrain.flink;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.types.Row;

/**
 * Row(user_id, bytes) of an Impression / Action message: the feature job's user key in the
 * JVM (streaming/features/flink_functions.py's user_key): 0 for unreadable bytes or a user_id
 * beyond a long (the user step dead-letters them).
 */
public final class UserKey implements MapFunction<byte[], Row> {
    private static final long serialVersionUID = 1L;

    public static long userId(byte[] raw) {
        int[] rid = Peek.requestId(raw);
        if (rid == null) {
            return 0L;
        }
        int[] end = new int[1];
        boolean[] fits = new boolean[1];
        long user = Peek.zigzag(raw, rid[1], end, fits);
        // as peek_ids: the item_id after it must be whole too
        return end[0] < 0 || !fits[0] || Peek.varintEnd(raw, end[0]) < 0 ? 0L : user;
    }

    @Override
    public Row map(byte[] raw) {
        return Row.of(userId(raw), raw);
    }
}
