package streamtrain.flink;

import java.util.zip.CRC32;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.types.Row;

/**
 * Row(bucket, bytes) of an Impression / Action message: the joiner's key in the JVM, so the
 * sources need no Python key selector. The bucket is streaming/joiner/join_function.py's
 * join_bucket: crc32(request_id + "|" + item_id's varint bytes) % buckets, 0 for unreadable
 * bytes (the join function dead-letters them there).
 */
public final class JoinBucket implements MapFunction<byte[], Row> {
    private static final long serialVersionUID = 1L;
    private final int buckets;

    public JoinBucket(int buckets) {
        if (buckets < 1) {
            throw new IllegalArgumentException("buckets must be >= 1, got " + buckets);
        }
        this.buckets = buckets;
    }

    public static int bucket(byte[] raw, int buckets) {
        int[] rid = Peek.requestId(raw);
        if (rid == null) {
            return 0;
        }
        int item = Peek.varintEnd(raw, rid[1]);   // past user_id
        int itemEnd = Peek.varintEnd(raw, item);
        if (item < 0 || itemEnd < 0) {
            return 0;
        }
        CRC32 crc = new CRC32();
        crc.update(raw, rid[0], rid[1] - rid[0]);
        crc.update('|');
        crc.update(raw, item, itemEnd - item);
        return (int) (crc.getValue() % buckets);
    }

    @Override
    public Row map(byte[] raw) {
        return Row.of(bucket(raw, buckets), raw);
    }
}
