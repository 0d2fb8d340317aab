package streamtrain.flink;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.java.tuple.Tuple;
import org.apache.flink.types.Row;

/** Row(tuple.f[field], tuple): keys a tuple stream by one of its fields in the JVM. */
public final class FieldKey implements MapFunction<Tuple, Row> {
    private static final long serialVersionUID = 1L;
    private final int field;

    public FieldKey(int field) {
        this.field = field;
    }

    @Override
    public Row map(Tuple value) {
        return Row.of(value.getField(field), value);
    }
}
