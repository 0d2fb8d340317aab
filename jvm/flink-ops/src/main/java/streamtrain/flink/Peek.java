package streamtrain.flink;

import java.util.Arrays;

/**
 * The leading fields of an Impression / Action message (Avro single-object encoding: a
 * 10-byte header, then schema_version, request_id, user_id, item_id) read without a decode.
 * The twin of schemas/peek.py: every method gives what the Python one gives, and -1 / null
 * where the Python one raises (truncated bytes, a negative length).
 */
final class Peek {
    static final int HEADER_LEN = 10;

    private Peek() {}

    /** Position just past the varint at {@code pos}; -1 if the bytes end inside it. */
    static int varintEnd(byte[] data, int pos) {
        while (pos >= 0 && pos < data.length) {
            if ((data[pos++] & 0x80) == 0) {
                return pos;
            }
        }
        return -1;
    }

    /**
     * The zigzag varint at {@code pos} as a long, with its end in {@code end[0]}. {@code fits[0]}
     * is false when the raw varint needs more than 64 bits (the Python value is then beyond a
     * long). end[0] = -1 if the bytes end inside it.
     */
    static long zigzag(byte[] data, int pos, int[] end, boolean[] fits) {
        long raw = 0;
        int shift = 0;
        fits[0] = true;
        while (true) {
            if (pos < 0 || pos >= data.length) {
                end[0] = -1;
                return 0;
            }
            int b = data[pos++] & 0xFF;
            int bits = b & 0x7F;
            if (shift < 63) {
                raw |= ((long) bits) << shift;
            } else if (shift == 63) {
                raw |= ((long) (bits & 1)) << 63;
                if (bits > 1) {
                    fits[0] = false;
                }
            } else if (bits != 0) {
                fits[0] = false;
            }
            if ((b & 0x80) == 0) {
                end[0] = pos;
                return (raw >>> 1) ^ -(raw & 1);
            }
            shift += 7;
        }
    }

    /** Whether {@code data} starts with one of {@code headers} (10-byte headers, one after another). */
    static boolean hasHeader(byte[] headers, byte[] data) {
        if (data.length < HEADER_LEN) {
            return false;
        }
        for (int at = 0; at < headers.length; at += HEADER_LEN) {
            if (Arrays.equals(data, 0, HEADER_LEN, headers, at, at + HEADER_LEN)) {
                return true;
            }
        }
        return false;
    }

    /** Position just past user_id and item_id (after the request_id), or -1 if the bytes end first. */
    static int afterIds(byte[] data) {
        int[] rid = requestId(data);
        return rid == null ? -1 : varintEnd(data, varintEnd(data, rid[1]));
    }

    /** The request_id's start and end, or null (truncated, negative or overlong length). */
    static int[] requestId(byte[] data) {
        int pos = varintEnd(data, HEADER_LEN);
        if (pos < 0) {
            return null;
        }
        int[] end = new int[1];
        boolean[] fits = new boolean[1];
        long n = zigzag(data, pos, end, fits);
        if (end[0] < 0 || !fits[0] || n < 0 || n > data.length - end[0]) {
            return null;
        }
        return new int[] {end[0], end[0] + (int) n};
    }
}
