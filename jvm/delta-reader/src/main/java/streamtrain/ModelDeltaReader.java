package streamtrain;

import java.io.IOException;
import java.io.Writer;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.stream.Stream;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.SchemaStore;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Reads model-deltas and model-dense as a serving system in another language would: Apache
 * Avro's single-object encoding (C3 01 + CRC-64-AVRO fingerprint + body), the writer schema
 * resolved by fingerprint among the .avsc files of schemas/avro/, versions applied in order
 * once every part of every shard arrived (a newer complete version abandons an older
 * incomplete one: a gap), tombstones removing rows, an id both upserted and tombstoned in one
 * version keeping its row (as sync/view.py), dense chunks joined and checked by sha256.
 *
 * <p>Reads every partition from the beginning up to the end offsets seen at start and writes
 * JSON: {"model", "version", "dense_versions", "gaps", "messages", "undecodable",
 * "rows": {"table": {"id": "8-hex-digit float32 bits, ...", ...}}}.
 */
public final class ModelDeltaReader {
    private static final class Staged {
        int numShards = -1;
        final Map<Integer, Integer> partsWanted = new HashMap<>(); // shard -> num_parts
        final Map<Integer, TreeSet<Integer>> partsSeen = new HashMap<>(); // shard -> parts
        final List<GenericRecord> records = new ArrayList<>();

        boolean complete() {
            if (numShards < 0 || partsWanted.size() < numShards) {
                return false;
            }
            for (Map.Entry<Integer, Integer> e : partsWanted.entrySet()) {
                if (partsSeen.getOrDefault(e.getKey(), new TreeSet<>()).size() < e.getValue()) {
                    return false;
                }
            }
            return true;
        }
    }

    private final String model;
    private final BinaryMessageDecoder<GenericRecord> deltaDecoder;
    private final BinaryMessageDecoder<GenericRecord> denseDecoder;
    private final Map<String, Map<Long, float[]>> tables = new TreeMap<>();
    private final TreeMap<Long, Staged> staged = new TreeMap<>();
    private final TreeMap<Long, Map<Integer, byte[]>> denseChunks = new TreeMap<>();
    private final Map<Long, String> denseSha = new HashMap<>();
    private final Map<Long, Integer> denseCount = new HashMap<>();
    private final TreeSet<Long> denseVersions = new TreeSet<>();
    private final TreeSet<Long> gaps = new TreeSet<>();
    private long version = -1;
    private long messages;
    private long undecodable;

    ModelDeltaReader(String model, Path schemaDir) throws IOException {
        this.model = model;
        SchemaStore.Cache store = new SchemaStore.Cache();
        Map<String, Schema> byName = new HashMap<>();
        try (Stream<Path> files = Files.walk(schemaDir)) {
            for (Path p : files.filter(f -> f.toString().endsWith(".avsc")).sorted().toList()) {
                Schema s = new Schema.Parser().parse(p.toFile());
                store.addSchema(s);
                if (p.getParent().equals(schemaDir)) { // the current version is the reader schema
                    byName.put(s.getName(), s);
                }
            }
        }
        deltaDecoder = new BinaryMessageDecoder<>(GenericData.get(), byName.get("SparseDelta"), store);
        denseDecoder = new BinaryMessageDecoder<>(GenericData.get(), byName.get("DenseSnapshot"), store);
    }

    void onDelta(byte[] raw) {
        GenericRecord d;
        try {
            d = deltaDecoder.decode(raw);
        } catch (IOException | RuntimeException e) { // bad bytes or an unknown fingerprint
            undecodable++;
            return;
        }
        if (!model.equals(d.get("model").toString())) {
            return;
        }
        messages++;
        long v = (Long) d.get("version");
        if (v <= version) {
            return; // stale (already applied or abandoned)
        }
        Staged st = staged.computeIfAbsent(v, k -> new Staged());
        int shard = (Integer) d.get("shard");
        int part = (Integer) d.get("part");
        st.numShards = (Integer) d.get("num_shards");
        st.partsWanted.put(shard, (Integer) d.get("num_parts"));
        if (st.partsSeen.computeIfAbsent(shard, k -> new TreeSet<>()).add(part)) {
            st.records.add(d);
        }
        if (st.complete()) {
            for (Long older : new ArrayList<>(staged.headMap(v).keySet())) {
                gaps.add(older); // a newer version completed first: the older one is abandoned
                staged.remove(older);
            }
            for (long missing = version + 1; version >= 0 && missing < v; missing++) {
                if (!staged.containsKey(missing)) {
                    gaps.add(missing);
                }
            }
            apply(staged.remove(v).records);
            version = v;
        }
    }

    private void apply(List<GenericRecord> parts) {
        for (GenericRecord d : parts) { // tombstones first: an id upserted too keeps its row
            Map<Long, float[]> rows = tables.computeIfAbsent(d.get("table").toString(), k -> new HashMap<>());
            for (Object id : (List<?>) d.get("tombstones")) {
                rows.remove((Long) id);
            }
        }
        for (GenericRecord d : parts) {
            Map<Long, float[]> rows = tables.computeIfAbsent(d.get("table").toString(), k -> new HashMap<>());
            List<?> ids = (List<?>) d.get("ids");
            int dim = (Integer) d.get("dim");
            boolean half = "fp16".equals(d.get("dtype").toString());
            ByteBuffer values = ((ByteBuffer) d.get("values")).duplicate().order(ByteOrder.LITTLE_ENDIAN);
            for (Object id : ids) {
                float[] row = new float[dim];
                for (int k = 0; k < dim; k++) {
                    row[k] = half ? halfToFloat(values.getShort()) : values.getFloat();
                }
                rows.put((Long) id, row);
            }
        }
    }

    void onDense(byte[] raw) throws NoSuchAlgorithmException {
        GenericRecord c;
        try {
            c = denseDecoder.decode(raw);
        } catch (IOException | RuntimeException e) {
            undecodable++;
            return;
        }
        if (!model.equals(c.get("model").toString())) {
            return;
        }
        long v = (Long) c.get("version");
        ByteBuffer payload = (ByteBuffer) c.get("payload");
        byte[] bytes = new byte[payload.remaining()];
        payload.duplicate().get(bytes);
        denseChunks.computeIfAbsent(v, k -> new TreeMap<>()).put((Integer) c.get("chunk"), bytes);
        denseSha.put(v, c.get("sha256").toString());
        denseCount.put(v, (Integer) c.get("num_chunks"));
        Map<Integer, byte[]> chunks = denseChunks.get(v);
        if (chunks.size() == denseCount.get(v)) {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            for (byte[] b : chunks.values()) {
                sha.update(b);
            }
            if (HexFormat.of().formatHex(sha.digest()).equals(denseSha.get(v))) {
                denseVersions.add(v);
            } else {
                undecodable++;
            }
            denseChunks.remove(v);
        }
    }

    /** IEEE 754 half precision to float (Java 17 has no Float.float16ToFloat). */
    static float halfToFloat(short h) {
        int bits = h & 0xffff;
        int sign = (bits >>> 15) << 31;
        int exp = (bits >>> 10) & 0x1f;
        int mant = bits & 0x3ff;
        if (exp == 0x1f) {
            return Float.intBitsToFloat(sign | 0x7f800000 | (mant << 13));
        }
        if (exp == 0) {
            if (mant == 0) {
                return Float.intBitsToFloat(sign);
            }
            float f = mant / 1024.0f * (float) Math.pow(2, -14); // subnormal
            return sign != 0 ? -f : f;
        }
        return Float.intBitsToFloat(sign | ((exp - 15 + 127) << 23) | (mant << 13));
    }

    void write(Writer out) throws IOException {
        StringBuilder sb = new StringBuilder();
        sb.append("{\"model\": \"").append(model).append("\", \"version\": ").append(version)
          .append(", \"dense_versions\": ").append(denseVersions).append(", \"gaps\": ").append(gaps)
          .append(", \"messages\": ").append(messages).append(", \"undecodable\": ").append(undecodable)
          .append(", \"rows\": {");
        boolean firstTable = true;
        for (Map.Entry<String, Map<Long, float[]>> t : tables.entrySet()) {
            sb.append(firstTable ? "" : ", ").append('"').append(t.getKey()).append("\": {");
            firstTable = false;
            boolean first = true;
            for (Map.Entry<Long, float[]> r : new TreeMap<>(t.getValue()).entrySet()) {
                sb.append(first ? "" : ", ").append('"').append(r.getKey()).append("\": \"");
                first = false;
                float[] row = r.getValue();
                for (int k = 0; k < row.length; k++) {
                    sb.append(k == 0 ? "" : ",").append(String.format("%08x", Float.floatToRawIntBits(row[k])));
                }
                sb.append('"');
            }
            sb.append('}');
        }
        sb.append("}}\n");
        out.write(sb.toString());
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> a = new HashMap<>(Map.of("-bootstrap", "localhost:9092", "-deltas", "model-deltas",
                "-dense", "model-dense", "-model", "ctr", "-schemas", "schemas/avro", "-out", "-",
                "-timeout-ms", "60000"));
        for (int i = 0; i + 1 < args.length; i += 2) {
            if (!a.containsKey(args[i])) {
                System.err.println("unknown option " + args[i] + "; options: " + a.keySet());
                System.exit(2);
            }
            a.put(args[i], args[i + 1]);
        }
        ModelDeltaReader reader = new ModelDeltaReader(a.get("-model"), Path.of(a.get("-schemas")));
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, a.get("-bootstrap"));
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, String.valueOf(16 << 20));
        try (KafkaConsumer<byte[], byte[]> consumer =
                     new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<TopicPartition> tps = new ArrayList<>();
            for (String topic : List.of(a.get("-deltas"), a.get("-dense"))) {
                for (PartitionInfo p : consumer.partitionsFor(topic, Duration.ofSeconds(30))) {
                    tps.add(new TopicPartition(topic, p.partition()));
                }
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> end = consumer.endOffsets(tps);
            long deadline = System.currentTimeMillis() + Long.parseLong(a.get("-timeout-ms"));
            while (tps.stream().anyMatch(tp -> consumer.position(tp) < end.get(tp))) {
                if (System.currentTimeMillis() > deadline) {
                    System.err.println("timed out before the end offsets " + end);
                    System.exit(1);
                }
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    if (r.topic().equals(a.get("-deltas"))) {
                        reader.onDelta(r.value());
                    } else {
                        reader.onDense(r.value());
                    }
                }
            }
        }
        if (a.get("-out").equals("-")) {
            Writer w = new java.io.OutputStreamWriter(System.out, StandardCharsets.UTF_8);
            reader.write(w);
            w.flush();
        } else {
            try (Writer w = Files.newBufferedWriter(Path.of(a.get("-out")), StandardCharsets.UTF_8)) {
                reader.write(w);
            }
        }
    }
}
