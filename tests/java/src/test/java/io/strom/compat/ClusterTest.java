package io.strom.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.Future;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Three real {@code strom serve} nodes forming one cluster (issue 14), driven
 * by the Java clients: the AdminClient creates a 12-partition topic and sees
 * its leaders on every broker and the active controller; a producer
 * bootstrapped at one node reaches every leader; a classic consumer group of
 * three reads every record exactly once.
 */
class ClusterTest {
    static final int NODES = 3;
    static final int PARTITIONS = 12;
    static final int PER_PARTITION = 20;
    static final Duration CLUSTER_TIMEOUT = Duration.ofSeconds(60);

    static final List<StromBroker> nodes = new ArrayList<>();

    @BeforeAll
    static void startCluster() throws Exception {
        List<Integer> ports = new ArrayList<>();
        for (int i = 0; i < NODES; i++) {
            ports.add(Ports.free());
        }
        String voters = java.util.stream.IntStream.range(0, NODES)
                .mapToObj(i -> (i + 1) + "@127.0.0.1:" + ports.get(i))
                .collect(Collectors.joining(","));
        for (int i = 0; i < NODES; i++) {
            String config = "node.id = " + (i + 1) + "\n"
                    + "process.roles = \"broker,controller\"\n"
                    + "controller.quorum.voters = \"" + voters + "\"\n"
                    + "controller.listener.names = \"CONTROLLER\"\n"
                    + "listeners = \"CONTROLLER://127.0.0.1:" + ports.get(i) + "\"\n"
                    + "group.initial.rebalance.delay.ms = 0\n";
            nodes.add(StromBroker.start(config, List.of()));
        }
        try (Admin admin = nodes.get(0).admin()) {
            Wait.until(CLUSTER_TIMEOUT, "three brokers and an active controller", () -> {
                DescribeClusterResult d = admin.describeCluster();
                try {
                    return d.nodes().get().size() == NODES && d.controller().get() != null
                            && d.controller().get().id() >= 1;
                } catch (Exception e) {
                    return false;
                }
            });
        }
    }

    @AfterAll
    static void stopCluster() throws Exception {
        for (StromBroker n : nodes) {
            n.close();
        }
    }

    static String bootstrapAll() {
        return nodes.stream().map(StromBroker::bootstrap).collect(Collectors.joining(","));
    }

    @Test
    void adminProducerAndGroupAcrossThreeBrokers() throws Exception {
        String topic = StromBroker.uniqueName("cluster12");
        Map<Integer, Integer> leaders = new HashMap<>();
        try (Admin admin = nodes.get(1).admin()) {
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get();
            Wait.until(CLUSTER_TIMEOUT, "leaders on every broker", () -> {
                try {
                    TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
                    leaders.clear();
                    for (TopicPartitionInfo p : d.partitions()) {
                        leaders.put(p.partition(), p.leader() == null ? -1 : p.leader().id());
                    }
                    return leaders.size() == PARTITIONS && new HashSet<>(leaders.values()).equals(Set.of(1, 2, 3));
                } catch (Exception e) {
                    return false;
                }
            });
            // Every node names the same active controller, one of the voters.
            Set<Integer> controllers = new HashSet<>();
            for (StromBroker n : nodes) {
                try (Admin a = n.admin()) {
                    DescribeClusterResult d = a.describeCluster();
                    Node controller = d.controller().get();
                    controllers.add(controller.id());
                    assertEquals(Set.of(1, 2, 3),
                            d.nodes().get().stream().map(Node::id).collect(Collectors.toSet()));
                }
            }
            assertEquals(1, controllers.size(), "controllers seen: " + controllers);
            assertTrue(Set.of(1, 2, 3).containsAll(controllers));
        }

        // A classic group of three, bootstrapped at different nodes, reads
        // everything once.
        String group = StromBroker.uniqueName("cluster-group");
        List<KafkaConsumer<String, String>> consumers = new ArrayList<>();
        Map<String, Integer> seen = new HashMap<>();
        Set<String> sent = new HashSet<>();
        Map<Integer, Integer> perConsumer = new HashMap<>();
        try {
            for (int i = 0; i < NODES; i++) {
                Properties c = new Properties();
                c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, nodes.get(i).bootstrap());
                c.put(ConsumerConfig.GROUP_ID_CONFIG, group);
                c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
                c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
                c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
                c.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
                KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c);
                consumer.subscribe(List.of(topic));
                consumers.add(consumer);
            }
            // The group settles first (every member owns partitions, each
            // partition once), so that one early member cannot read it all.
            Wait.until(CLUSTER_TIMEOUT, "the group to share the 12 partitions among 3 members", () -> {
                int owned = 0;
                for (KafkaConsumer<String, String> c : consumers) {
                    c.poll(Duration.ofMillis(100));
                }
                for (KafkaConsumer<String, String> c : consumers) {
                    if (c.assignment().isEmpty()) {
                        return false;
                    }
                    owned += c.assignment().size();
                }
                return owned == PARTITIONS;
            });
            // A producer bootstrapped at node 3 alone reaches every leader.
            Properties p = new Properties();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, nodes.get(2).bootstrap());
            p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            p.put(ProducerConfig.ACKS_CONFIG, "all");
            p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
                List<Future<RecordMetadata>> acks = new ArrayList<>();
                for (int i = 0; i < PER_PARTITION; i++) {
                    for (int part = 0; part < PARTITIONS; part++) {
                        String value = part + "-" + i;
                        sent.add(value);
                        acks.add(producer.send(new ProducerRecord<>(topic, part, null, value)));
                    }
                }
                for (Future<RecordMetadata> f : acks) {
                    f.get();
                }
            }

            long deadline = System.nanoTime() + CLUSTER_TIMEOUT.toNanos();
            while (seen.size() < sent.size() && System.nanoTime() < deadline) {
                for (int i = 0; i < consumers.size(); i++) {
                    for (ConsumerRecord<String, String> r : consumers.get(i).poll(Duration.ofMillis(100))) {
                        seen.merge(r.value(), 1, Integer::sum);
                        perConsumer.merge(i, 1, Integer::sum);
                    }
                }
            }
        } finally {
            for (KafkaConsumer<String, String> c : consumers) {
                c.close();
            }
        }
        assertEquals(sent, seen.keySet());
        assertTrue(seen.values().stream().allMatch(n -> n == 1), "records read more than once");
        assertEquals(NODES, perConsumer.size(), "every member read a share: " + perConsumer);
    }
}
