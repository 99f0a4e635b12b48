package io.strom.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.Test;

/** kafka-clients 4.4's AdminClient against the real broker. */
class AdminTest extends BrokerTest {
    static void produce(String topic, int n, int partitions) throws Exception {
        Map<String, Object> p = new HashMap<>();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        try (KafkaProducer<String, String> producer =
                new KafkaProducer<>(p, new StringSerializer(), new StringSerializer())) {
            // Distinct, increasing timestamps, so the max-timestamp offset is known.
            long t0 = System.currentTimeMillis() - 60_000;
            for (int i = 0; i < n; i++) {
                producer.send(new ProducerRecord<>(topic, i % partitions, t0 + i, "k" + i, "v" + i));
            }
            producer.flush();
        }
    }

    static Config topicConfig(String topic) throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        return admin.describeConfigs(List.of(r)).all().get().get(r);
    }

    @Test
    void createListDescribeDeleteTopics() throws Exception {
        String topic = name("admin-topics");
        NewTopic t = new NewTopic(topic, 3, (short) 1)
                .configs(Map.of("retention.ms", "3600000", "cleanup.policy", "compact"));
        admin.createTopics(List.of(t)).all().get();
        ExecutionException dup = assertThrows(ExecutionException.class,
                () -> admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get());
        assertInstanceOf(TopicExistsException.class, dup.getCause());
        ExecutionException bad = assertThrows(ExecutionException.class,
                () -> admin.createTopics(List.of(new NewTopic(name("bad"), 1, (short) 1)
                        .configs(Map.of("retention.ms", "soon")))).all().get());
        assertInstanceOf(InvalidConfigurationException.class, bad.getCause());

        assertTrue(admin.listTopics().names().get().contains(topic));
        TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
        assertEquals(3, d.partitions().size());
        assertFalse(d.topicId().equals(org.apache.kafka.common.Uuid.ZERO_UUID));
        for (var p : d.partitions()) {
            assertEquals(0, p.leader().id());
            assertEquals(1, p.replicas().size());
            assertEquals(1, p.isr().size());
        }

        Config c = topicConfig(topic);
        assertEquals("3600000", c.get("retention.ms").value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, c.get("retention.ms").source());
        assertEquals("compact", c.get("cleanup.policy").value());
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, c.get("segment.ms").source());

        admin.deleteTopics(List.of(topic)).all().get();
        Wait.until(java.time.Duration.ofSeconds(10), "topic gone from listTopics", () -> {
            try {
                return !admin.listTopics().names().get().contains(topic);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        ExecutionException gone = assertThrows(ExecutionException.class,
                () -> admin.describeTopics(List.of(topic)).allTopicNames().get());
        assertInstanceOf(UnknownTopicOrPartitionException.class, gone.getCause());
    }

    @Test
    void describeCluster() throws Exception {
        DescribeClusterResult r = admin.describeCluster();
        Collection<Node> nodes = r.nodes().get();
        assertEquals(1, nodes.size());
        Node node = nodes.iterator().next();
        assertEquals(0, node.id());
        assertEquals(broker.bootstrap(), node.host() + ":" + node.port());
        assertEquals(0, r.controller().get().id());
        String clusterId = r.clusterId().get();
        assertEquals(22, clusterId.length(), "a base64 uuid: " + clusterId);
    }

    @Test
    void listOffsetsAndGroups() throws Exception {
        String topic = name("admin-offsets");
        admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get();
        produce(topic, 10, 2);
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> latest =
                admin.listOffsets(Map.of(p0, OffsetSpec.latest(), p1, OffsetSpec.latest())).all().get();
        assertEquals(5, latest.get(p0).offset());
        assertEquals(5, latest.get(p1).offset());
        assertEquals(0, admin.listOffsets(Map.of(p0, OffsetSpec.earliest())).all().get().get(p0).offset());
        assertEquals(4, admin.listOffsets(Map.of(p0, OffsetSpec.maxTimestamp())).all().get().get(p0).offset());

        String group = "admin-group-" + topic;
        Map<String, Object> c = new HashMap<>();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        c.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        c.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        try (KafkaConsumer<String, String> consumer =
                new KafkaConsumer<>(c, new StringDeserializer(), new StringDeserializer())) {
            consumer.commitSync(Map.of(p0, new OffsetAndMetadata(3), p1, new OffsetAndMetadata(5)));
        }
        Collection<ConsumerGroupListing> groups = admin.listConsumerGroups().all().get();
        assertTrue(groups.stream().anyMatch(g -> g.groupId().equals(group)), "listed: " + groups);
        Map<TopicPartition, OffsetAndMetadata> committed =
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        assertEquals(3, committed.get(p0).offset());
        assertEquals(5, committed.get(p1).offset());
        admin.deleteConsumerGroups(List.of(group)).all().get();
        assertFalse(admin.listConsumerGroups().all().get().stream().anyMatch(g -> g.groupId().equals(group)));
    }

    /** DescribeLogDirs: the data directory with every partition's size. */
    @Test
    void describeLogDirs() throws Exception {
        String topic = name("admin-logdirs");
        admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get();
        produce(topic, 10, 2);
        Map<String, org.apache.kafka.clients.admin.LogDirDescription> dirs =
                admin.describeLogDirs(List.of(0)).allDescriptions().get().get(0);
        assertEquals(1, dirs.size(), "one log dir: " + dirs);
        var dir = dirs.values().iterator().next();
        assertTrue(dir.totalBytes().orElse(0) > 0, "total bytes reported");
        assertTrue(dir.usableBytes().orElse(-1) >= 0, "usable bytes reported");
        for (int p = 0; p < 2; p++) {
            var info = dir.replicaInfos().get(new TopicPartition(topic, p));
            assertTrue(info != null && info.size() > 0, "partition " + p + " has bytes: " + dir.replicaInfos());
        }
    }

    /**
     * OffsetForLeaderEpoch: a consumer that seeks to a position carrying
     * leader epoch 0 past the end of the log is told the log ends earlier
     * (LogTruncationException with the divergent offset), which it learns
     * only from OffsetForLeaderEpoch (KIP-320).
     */
    @Test
    void offsetForLeaderEpochDetectsTruncation() throws Exception {
        String topic = name("admin-epoch");
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
        produce(topic, 10, 1);
        TopicPartition tp = new TopicPartition(topic, 0);
        Map<String, Object> c = new HashMap<>();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
        c.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        try (KafkaConsumer<String, String> consumer =
                new KafkaConsumer<>(c, new StringDeserializer(), new StringDeserializer())) {
            consumer.assign(List.of(tp));
            // A position within the log with epoch 0 validates and reads on.
            consumer.seek(tp, new OffsetAndMetadata(4, java.util.Optional.of(0), ""));
            List<String> values = new java.util.ArrayList<>();
            long deadline = System.nanoTime() + java.time.Duration.ofSeconds(30).toNanos();
            while (values.size() < 6 && System.nanoTime() < deadline) {
                consumer.poll(java.time.Duration.ofMillis(200)).forEach(r -> values.add(r.value()));
            }
            assertEquals(List.of("v4", "v5", "v6", "v7", "v8", "v9"), values);

            consumer.seek(tp, new OffsetAndMetadata(50, java.util.Optional.of(0), ""));
            org.apache.kafka.clients.consumer.LogTruncationException truncated = null;
            deadline = System.nanoTime() + java.time.Duration.ofSeconds(30).toNanos();
            while (truncated == null && System.nanoTime() < deadline) {
                try {
                    consumer.poll(java.time.Duration.ofMillis(200));
                } catch (org.apache.kafka.clients.consumer.LogTruncationException e) {
                    truncated = e;
                }
            }
            assertTrue(truncated != null, "the consumer detected the truncation");
            assertEquals(10, truncated.divergentOffsets().get(tp).offset());
        }
    }

    /**
     * Dynamic broker configs: a topic default set on the broker (cluster
     * default, then this broker) reaches existing topics' live logs without
     * a restart: with log.message.timestamp.type=LogAppendTime a record
     * produced with an old CreateTime comes back with the broker's time.
     */
    @Test
    void dynamicBrokerConfigAppliesToLiveLogs() throws Exception {
        String topic = name("admin-dynamic");
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
        ConfigResource cluster = new ConfigResource(ConfigResource.Type.BROKER, "");
        ConfigResource node = new ConfigResource(ConfigResource.Type.BROKER, "0");
        try {
            admin.incrementalAlterConfigs(Map.of(cluster, List.of(new AlterConfigOp(
                    new ConfigEntry("log.retention.ms", "7200000"), AlterConfigOp.OpType.SET))))
                    .all().get();
            ConfigEntry retention = topicConfig(topic).get("retention.ms");
            assertEquals("7200000", retention.value());
            assertEquals(ConfigEntry.ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG, retention.source());

            admin.incrementalAlterConfigs(Map.of(node, List.of(new AlterConfigOp(
                    new ConfigEntry("log.message.timestamp.type", "LogAppendTime"), AlterConfigOp.OpType.SET))))
                    .all().get();
            ConfigEntry type = topicConfig(topic).get("message.timestamp.type");
            assertEquals("LogAppendTime", type.value());
            assertEquals(ConfigEntry.ConfigSource.DYNAMIC_BROKER_CONFIG, type.source());
            Config brokerConfig = admin.describeConfigs(List.of(node)).all().get().get(node);
            assertEquals("LogAppendTime", brokerConfig.get("log.message.timestamp.type").value());

            long old = System.currentTimeMillis() - 30 * 60_000;
            Map<String, Object> p = new HashMap<>();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
            try (KafkaProducer<String, String> producer =
                    new KafkaProducer<>(p, new StringSerializer(), new StringSerializer())) {
                producer.send(new ProducerRecord<>(topic, 0, old, "k", "v")).get();
            }
            Map<String, Object> c = new HashMap<>();
            c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
            c.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
            try (KafkaConsumer<String, String> consumer =
                    new KafkaConsumer<>(c, new StringDeserializer(), new StringDeserializer())) {
                TopicPartition tp = new TopicPartition(topic, 0);
                consumer.assign(List.of(tp));
                consumer.seekToBeginning(List.of(tp));
                List<org.apache.kafka.clients.consumer.ConsumerRecord<String, String>> got = new java.util.ArrayList<>();
                long deadline = System.nanoTime() + java.time.Duration.ofSeconds(30).toNanos();
                while (got.isEmpty() && System.nanoTime() < deadline) {
                    consumer.poll(java.time.Duration.ofMillis(200)).forEach(got::add);
                }
                assertEquals(1, got.size());
                assertEquals(org.apache.kafka.common.record.TimestampType.LOG_APPEND_TIME, got.get(0).timestampType());
                assertTrue(got.get(0).timestamp() > old + 20 * 60_000, "the broker's append time");
            }

            // A key that cannot change at run time is refused.
            ExecutionException fixed = assertThrows(ExecutionException.class, () -> admin.incrementalAlterConfigs(
                    Map.of(node, List.of(new AlterConfigOp(new ConfigEntry("num.partitions", "3"),
                            AlterConfigOp.OpType.SET)))).all().get());
            assertInstanceOf(InvalidConfigurationException.class, fixed.getCause());
        } finally {
            admin.incrementalAlterConfigs(Map.of(
                    cluster, List.of(new AlterConfigOp(new ConfigEntry("log.retention.ms", ""), AlterConfigOp.OpType.DELETE)),
                    node, List.of(new AlterConfigOp(new ConfigEntry("log.message.timestamp.type", ""),
                            AlterConfigOp.OpType.DELETE)))).all().get();
        }
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, topicConfig(topic).get("retention.ms").source());
        assertEquals("CreateTime", topicConfig(topic).get("message.timestamp.type").value());
    }

    /** IncrementalAlterConfigs on a topic: set, append, subtract, delete, applied at once. */
    @Test
    void incrementalAlterTopicConfigs() throws Exception {
        String topic = name("admin-alter");
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1)
                .configs(Map.of("retention.ms", "1000000")))).all().get();
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        admin.incrementalAlterConfigs(Map.of(r, List.of(
                new AlterConfigOp(new ConfigEntry("segment.bytes", "1048576"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE),
                new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.APPEND))))
                .all().get();
        Config c = topicConfig(topic);
        assertEquals("1048576", c.get("segment.bytes").value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, c.get("segment.bytes").source());
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, c.get("retention.ms").source());
        assertEquals(Set.of("delete", "compact"), Set.of(c.get("cleanup.policy").value().split(",")));

        admin.incrementalAlterConfigs(Map.of(r, List.of(
                new AlterConfigOp(new ConfigEntry("cleanup.policy", "delete"), AlterConfigOp.OpType.SUBTRACT))))
                .all().get();
        assertEquals("compact", topicConfig(topic).get("cleanup.policy").value());

        // A bad value is refused and changes nothing.
        ExecutionException bad = assertThrows(ExecutionException.class, () -> admin.incrementalAlterConfigs(
                Map.of(r, List.of(new AlterConfigOp(new ConfigEntry("segment.bytes", "big"), AlterConfigOp.OpType.SET),
                        new AlterConfigOp(new ConfigEntry("retention.ms", "5"), AlterConfigOp.OpType.SET))))
                .all().get());
        assertInstanceOf(InvalidConfigurationException.class, bad.getCause());
        assertEquals("1048576", topicConfig(topic).get("segment.bytes").value());
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, topicConfig(topic).get("retention.ms").source());

        // validateOnly checks without applying.
        admin.incrementalAlterConfigs(Map.of(r, List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", "5000"), AlterConfigOp.OpType.SET))),
                new org.apache.kafka.clients.admin.AlterConfigsOptions().validateOnly(true)).all().get();
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, topicConfig(topic).get("retention.ms").source());

        ConfigResource missing = new ConfigResource(ConfigResource.Type.TOPIC, name("missing"));
        ExecutionException unknown = assertThrows(ExecutionException.class, () -> admin.incrementalAlterConfigs(
                Map.of(missing, List.of(new AlterConfigOp(new ConfigEntry("retention.ms", "5"), AlterConfigOp.OpType.SET))))
                .all().get());
        assertInstanceOf(UnknownTopicOrPartitionException.class, unknown.getCause());
    }
}
