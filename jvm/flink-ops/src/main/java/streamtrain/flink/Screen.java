package streamtrain.flink;

import java.io.Serializable;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashSet;
import java.util.Set;

/**
 * Which Impression / Action messages the feature job's record gate (streaming/record_gate.py)
 * may reject, read from their bytes before they wait for the watermark in {@link EventTimeSort}.
 * A suspect record does not wait: the Python step behind the sort takes it at once and
 * dead-letters it with the gate's reason, so a bad record is dead-lettered when it arrives, as
 * without the sort, and one stamped far in the future is not held.
 *
 * <p>The screen only decides "wait or not"; the gate decides what is rejected. It reads what
 * {@code schemas.validation} checks on the leading fields (request_id, user_id, item_id,
 * action_type, event_time_ms against the processing clock) for any writer schema, and for a
 * message of this very schema (header {@code own}) its whole body as the decoder reads it:
 * a truncated body, trailing bytes, a slots/ids length mismatch, a string that is not UTF-8.
 * A record it passes that the gate still rejects (a decoder's rule it does not mirror) is
 * dead-lettered once the watermark passes it.
 */
public final class Screen implements Serializable {
    private static final long serialVersionUID = 1L;
    private static final int LEADING_UNREADABLE = -1;
    private final byte[][] ownHeaders;   // [kind] -> the 10-byte headers of messages of our schema
    private final byte[][] knownHeaders; // [kind] -> those of every writer schema the codec reads
    private final long minEventTimeMs;   // 0: no floor (still > 0)
    private final long maxFutureMs;
    private final long maxPastMs;        // < 0: no limit
    private final Set<String> actionTypes;   // null: any non-empty type

    /**
     * @param impressionHeaders the 10-byte headers the Impression codec reads without
     *                          resolution, one after another
     * @param impressionKnown   the headers of every writer schema it reads (these and older)
     * @param actionHeaders     the same for Action
     * @param actionKnown       the same for Action
     * @param minEventTimeMs    the earliest event time accepted; 0: no floor (still > 0)
     * @param maxPastMs         how far behind the clock an event may be; < 0: no limit
     * @param actionTypes       the accepted action types, or null for any non-empty one
     */
    public Screen(byte[] impressionHeaders, byte[] impressionKnown, byte[] actionHeaders,
                  byte[] actionKnown, long minEventTimeMs, long maxFutureMs, long maxPastMs,
                  String[] actionTypes) {
        this.ownHeaders = new byte[][] {impressionHeaders.clone(), actionHeaders.clone()};
        this.knownHeaders = new byte[][] {impressionKnown.clone(), actionKnown.clone()};
        this.minEventTimeMs = minEventTimeMs;
        this.maxFutureMs = maxFutureMs;
        this.maxPastMs = maxPastMs;
        this.actionTypes = actionTypes == null ? null : new HashSet<>(Arrays.asList(actionTypes));
    }

    /** True when the gate may reject this message (kind 0: Impression, 1: Action) at {@code nowMs}. */
    public boolean suspect(byte[] raw, int kind, long nowMs) {
        if (raw == null || raw.length < Peek.HEADER_LEN || (raw[0] & 0xFF) != 0xC3 || raw[1] != 0x01) {
            return true;
        }
        boolean action = kind == EventTimeSort.KIND_ACTION;
        if (!listed(knownHeaders, raw, kind)) {
            return true;   // no writer schema the decoder knows
        }
        Reader r = new Reader(raw, Peek.HEADER_LEN);
        r.varint();                                     // schema_version
        if (!r.nonEmptyString() || r.missingId() || r.missingId()) {
            return true;   // request_id; user_id, item_id (> 0, within a long)
        }
        if (action) {
            String type = r.string();
            if (type == null || type.isEmpty() || (actionTypes != null && !actionTypes.contains(type))) {
                return true;
            }
        }
        long time = r.zigzag();
        if (r.pos < 0 || badTime(time, nowMs)) {
            return true;
        }
        if (!listed(ownHeaders, raw, kind)) {
            return false;   // another writer schema: its body's layout is the decoder's business
        }
        if (action) {
            r.skip(4);                                  // value: float
        } else {
            long slots = r.array(false);                // slots: int
            long ids = r.array(false);                  // ids: long
            r.array(true);                              // dense: float
            if (slots != ids) {
                return true;
            }
        }
        return r.pos != raw.length;
    }

    private boolean badTime(long time, long nowMs) {
        return time <= 0 || (minEventTimeMs > 0 && time < minEventTimeMs)
                || time > nowMs + maxFutureMs || (maxPastMs >= 0 && time < nowMs - maxPastMs);
    }

    private static boolean listed(byte[][] byKind, byte[] raw, int kind) {
        return Peek.hasHeader(byKind[kind == EventTimeSort.KIND_ACTION ? 1 : 0], raw);
    }

    /** Reads Avro binary values; {@code pos} becomes -1 (and stays) once something is unreadable. */
    private static final class Reader {
        final byte[] data;
        int pos;
        private final int[] end = new int[1];
        private final boolean[] fits = new boolean[1];

        Reader(byte[] data, int pos) {
            this.data = data;
            this.pos = pos;
        }

        long zigzag() {
            if (pos < 0) {
                return 0;
            }
            long v = Peek.zigzag(data, pos, end, fits);
            pos = end[0] < 0 || !fits[0] ? LEADING_UNREADABLE : end[0];
            return v;
        }

        void varint() {
            zigzag();
        }

        /** True when the long read is not > 0 (or unreadable): the gate's "missing" id. */
        boolean missingId() {
            long v = zigzag();
            return pos < 0 || v <= 0;
        }

        void skip(long n) {
            if (pos >= 0) {
                pos = n < 0 || n > data.length - pos ? LEADING_UNREADABLE : pos + (int) n;
            }
        }

        /** A string's bytes as UTF-8, or null when they are not (or cannot be read). */
        String string() {
            long n = zigzag();
            int start = pos;
            skip(n);
            if (pos < 0) {
                return null;
            }
            try {
                return StandardCharsets.UTF_8.newDecoder()
                        .onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT)
                        .decode(ByteBuffer.wrap(data, start, (int) n)).toString();
            } catch (CharacterCodingException e) {
                pos = LEADING_UNREADABLE;
                return null;
            }
        }

        boolean nonEmptyString() {
            String s = string();
            return s != null && !s.isEmpty();
        }

        /** An array's items skipped (varints, or 4-byte floats); the item count, -1 if unreadable. */
        long array(boolean floats) {
            long total = 0;
            while (pos >= 0) {
                long count = zigzag();
                if (pos < 0 || count == 0) {
                    break;
                }
                if (count == Long.MIN_VALUE) {
                    pos = LEADING_UNREADABLE;
                    break;
                }
                if (count < 0) {         // a block with its byte size: -count items
                    count = -count;
                    zigzag();
                }
                total += count;
                for (long i = 0; i < count && pos >= 0; i++) {
                    if (floats) {
                        skip(4);
                    } else {
                        zigzag();
                    }
                }
            }
            return pos < 0 ? -1 : total;
        }
    }
}
