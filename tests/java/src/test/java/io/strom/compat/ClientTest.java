package io.strom.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.Test;

/** kafka-clients 4.4 producer and consumer groups against the real broker. */
class ClientTest extends BrokerTest {
    static Properties producerProps() {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        return p;
    }

    static Properties consumerProps(String group) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        // Strom speaks the classic group protocol (JoinGroup/SyncGroup), the 4.x default.
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        return p;
    }

    static Admin admin() {
        return broker.admin();
    }

    static void createTopic(String topic, int partitions) throws Exception {
        try (Admin admin = admin()) {
            admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get();
        }
    }

    /** Idempotent (the 4.x default) acks=all producer: every send is acknowledged with consecutive offsets. */
    @Test
    void idempotentProducerAcksAll() throws Exception {
        String topic = name("java-produce");
        createTopic(topic, 3);
        int n = 3000;
        Map<Integer, List<Long>> offsets = new HashMap<>();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(producerProps())) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, "k" + (i % 17), "v" + i)));
            }
            producer.flush();
            for (Future<RecordMetadata> f : sent) {
                RecordMetadata md = f.get();
                offsets.computeIfAbsent(md.partition(), p -> new ArrayList<>()).add(md.offset());
            }
        }
        int total = 0;
        for (List<Long> list : offsets.values()) {
            for (int i = 0; i < list.size(); i++) {
                assertEquals((long) i, list.get(i), "offsets of one partition are 0, 1, 2, ...");
            }
            total += list.size();
        }
        assertEquals(n, total);
        assertTrue(offsets.size() > 1, "17 keys spread over 3 partitions");
    }

    /**
     * Two consumers of one group with the cooperative-sticky assignor and
     * static membership read every record once; the committed offsets are
     * the log ends.
     */
    @Test
    void consumerGroupCooperativeStickyStatic() throws Exception {
        String topic = name("java-group");
        String group = "g-" + topic;
        int partitions = 4;
        createTopic(topic, partitions);
        int n = 2000;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(producerProps())) {
            for (int i = 0; i < n; i++) {
                producer.send(new ProducerRecord<>(topic, "k" + i, "v" + i));
            }
            producer.flush();
        }
        Map<String, Integer> seen = new HashMap<>();
        List<KafkaConsumer<String, String>> consumers = new ArrayList<>();
        try {
            for (int c = 0; c < 2; c++) {
                Properties p = consumerProps(group);
                p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
                        "org.apache.kafka.clients.consumer.CooperativeStickyAssignor");
                p.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "member-" + c);
                KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p);
                consumer.subscribe(List.of(topic));
                consumers.add(consumer);
            }
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (seen.size() < n && System.nanoTime() < deadline) {
                for (KafkaConsumer<String, String> consumer : consumers) {
                    for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(100))) {
                        seen.merge(r.value(), 1, Integer::sum);
                        assertEquals("v" + r.key().substring(1), r.value());
                    }
                    consumer.commitSync();
                }
            }
            assertEquals(n, seen.size(), "every record consumed");
            for (Map.Entry<String, Integer> e : seen.entrySet()) {
                assertEquals(1, e.getValue(), "consumed once: " + e.getKey());
            }
            int assigned = 0;
            for (KafkaConsumer<String, String> consumer : consumers) {
                assertFalse(consumer.assignment().isEmpty(), "both members got partitions");
                assigned += consumer.assignment().size();
            }
            assertEquals(partitions, assigned);
        } finally {
            for (KafkaConsumer<String, String> consumer : consumers) {
                consumer.close(Duration.ofSeconds(10));
            }
        }
        try (Admin admin = admin()) {
            Map<TopicPartition, OffsetAndMetadata> committed =
                    admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            long sum = 0;
            for (int p = 0; p < partitions; p++) {
                OffsetAndMetadata om = committed.get(new TopicPartition(topic, p));
                assertNotNull(om, "committed offset of partition " + p);
                sum += om.offset();
            }
            assertEquals(n, sum, "committed offsets are the log ends");
        }
    }

    /**
     * Until Strom has transactions, a transactional producer fails at once
     * with a fatal error, instead of retrying
     * FindCoordinator until max.block.ms and timing out.
     */
    @Test
    void transactionalProducerGetsAClearError() {
        Properties p = producerProps();
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, name("tx"));
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            org.apache.kafka.common.KafkaException e = org.junit.jupiter.api.Assertions.assertThrows(
                    org.apache.kafka.common.KafkaException.class, producer::initTransactions);
            assertFalse(e instanceof org.apache.kafka.common.errors.TimeoutException,
                    "not a timeout: " + e);
            // TRANSACTIONAL_ID_AUTHORIZATION_FAILED, the one lookup error that
            // librdkafka treats as fatal too; the Java client shows its own
            // text for it, not the broker's message.
            assertTrue(e instanceof org.apache.kafka.common.errors.TransactionalIdAuthorizationException,
                    "fatal TRANSACTIONAL_ID_AUTHORIZATION_FAILED: " + e);
            // Fatal: the producer refuses to go on.
            org.junit.jupiter.api.Assertions.assertThrows(
                    org.apache.kafka.common.KafkaException.class, producer::beginTransaction);
        }
    }
}
