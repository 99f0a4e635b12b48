package io.strom.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.OffsetOutOfRangeException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.Test;

/** DeleteRecords (AdminClient and kafka-delete-records) and DescribeProducers. */
class AdminApisTest extends BrokerTest {
    static final String DELETE_RECORDS = "org.apache.kafka.tools.DeleteRecordsCommand";

    static TopicPartition newTopic(String prefix) throws Exception {
        String topic = name(prefix);
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
        return new TopicPartition(topic, 0);
    }

    static void produceIdempotent(TopicPartition tp, int n) {
        Map<String, Object> p = new HashMap<>();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        try (KafkaProducer<String, String> producer =
                new KafkaProducer<>(p, new StringSerializer(), new StringSerializer())) {
            for (int i = 0; i < n; i++) {
                producer.send(new ProducerRecord<>(tp.topic(), tp.partition(), "k" + i, "v" + i));
            }
            producer.flush();
        }
    }

    static long earliest(TopicPartition tp) throws Exception {
        return admin.listOffsets(Map.of(tp, OffsetSpec.earliest())).all().get().get(tp).offset();
    }

    /** The first record a consumer reads from the beginning of the partition. */
    static ConsumerRecord<String, String> firstFromBeginning(TopicPartition tp) throws InterruptedException {
        Map<String, Object> c = new HashMap<>();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        try (KafkaConsumer<String, String> consumer =
                new KafkaConsumer<>(c, new StringDeserializer(), new StringDeserializer())) {
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            ConsumerRecord<String, String>[] first = new ConsumerRecord[1];
            Wait.until(Duration.ofSeconds(30), "a record of " + tp, () -> {
                var records = consumer.poll(Duration.ofMillis(200));
                if (!records.isEmpty()) {
                    first[0] = records.iterator().next();
                }
                return first[0] != null;
            });
            return first[0];
        }
    }

    @Test
    void deleteRecordsWithTheAdminClient() throws Exception {
        TopicPartition tp = newTopic("delete-records");
        produceIdempotent(tp, 50);
        var result = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(20)));
        assertEquals(20, result.lowWatermarks().get(tp).get().lowWatermark());
        assertEquals(20, earliest(tp));
        ConsumerRecord<String, String> first = firstFromBeginning(tp);
        assertEquals(20, first.offset());
        assertEquals("v20", first.value());

        ExecutionException past = assertThrows(ExecutionException.class,
                () -> admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(51))).all().get());
        assertInstanceOf(OffsetOutOfRangeException.class, past.getCause());
        assertEquals(20, earliest(tp));
    }

    @Test
    void deleteRecordsWithTheCliTool() throws Exception {
        TopicPartition tp = newTopic("delete-records-cli");
        produceIdempotent(tp, 50);
        Path json = Files.createTempFile("delete-records-", ".json");
        Files.writeString(json, "{\"version\":1,\"partitions\":[{\"topic\":\"" + tp.topic()
                + "\",\"partition\":0,\"offset\":35}]}");
        Tool t = Tool.ok(DELETE_RECORDS, null,
                "--bootstrap-server", broker.bootstrap(), "--offset-json-file", json.toString());
        Files.deleteIfExists(json);
        assertTrue(t.stdout.contains("low_watermark: 35"), t.stdout);
        assertEquals(35, earliest(tp));
        assertEquals(35, firstFromBeginning(tp).offset());
    }

    @Test
    void describeProducers() throws Exception {
        TopicPartition tp = newTopic("describe-producers");
        produceIdempotent(tp, 10);
        List<ProducerState> producers = admin.describeProducers(List.of(tp))
                .partitionResult(tp).get().activeProducers();
        assertEquals(1, producers.size(), producers.toString());
        ProducerState p = producers.get(0);
        assertTrue(p.producerId() >= 0, p.toString());
        assertTrue(p.producerEpoch() >= 0, p.toString());
        assertEquals(9, p.lastSequence(), p.toString());
        assertTrue(p.lastTimestamp() > 0, p.toString());
        assertTrue(p.currentTransactionStartOffset().isEmpty(), p.toString());

        // A second producer is a second entry.
        produceIdempotent(tp, 3);
        producers = admin.describeProducers(List.of(tp)).partitionResult(tp).get().activeProducers();
        assertEquals(2, producers.size(), producers.toString());
        // (A partition that does not exist never reaches the broker: the
        // AdminClient looks for its leader in the metadata until it times out.)
    }
}
