package io.strom.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.Test;

/**
 * Kafka's CLI tools (the kafka-tools 4.4 jar, run through the main classes
 * its shell scripts run) against the real broker.
 */
class CliToolsTest extends BrokerTest {
    static final String TOPICS = "org.apache.kafka.tools.TopicCommand";
    static final String CONFIGS = "org.apache.kafka.tools.ConfigCommand";
    static final String CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer";
    static final String CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer";
    static final String CONSUMER_GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
    static final String PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance";
    static final String CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance";

    static String[] bs(String... args) {
        String[] all = Arrays.copyOf(new String[] {"--bootstrap-server", broker.bootstrap()}, args.length + 2);
        System.arraycopy(args, 0, all, 2, args.length);
        return all;
    }

    /** kafka-topics --create, --list, --describe, --alter --partitions, --delete. */
    @Test
    void kafkaTopics() throws Exception {
        String topic = name("cli-topics");
        Tool created = Tool.ok(TOPICS, null, bs("--create", "--topic", topic, "--partitions", "3",
                "--replication-factor", "1", "--config", "retention.ms=3600000"));
        assertTrue(created.stdout.contains("Created topic " + topic), created.toString());
        assertTrue(Tool.ok(TOPICS, null, bs("--list")).stdout.lines().anyMatch(topic::equals));

        Tool described = Tool.ok(TOPICS, null, bs("--describe", "--topic", topic));
        assertTrue(described.stdout.contains("PartitionCount: 3"), described.toString());
        assertTrue(described.stdout.contains("retention.ms=3600000"), described.toString());
        for (int p = 0; p < 3; p++) {
            assertTrue(described.stdout.contains("Partition: " + p + "\tLeader: 0\tReplicas: 0\tIsr: 0"),
                    described.toString());
        }

        Tool.ok(TOPICS, null, bs("--alter", "--topic", topic, "--partitions", "5"));
        Tool grown = Tool.ok(TOPICS, null, bs("--describe", "--topic", topic));
        assertTrue(grown.stdout.contains("PartitionCount: 5"), grown.toString());

        Tool shrink = Tool.run(TOPICS, null, bs("--alter", "--topic", topic, "--partitions", "2"));
        assertTrue(shrink.status != 0, "shrinking is refused: " + shrink);

        Tool.ok(TOPICS, null, bs("--delete", "--topic", topic));
        Wait.until(java.time.Duration.ofSeconds(20), "topic deleted", () -> {
            try {
                return Tool.ok(TOPICS, null, bs("--list")).stdout.lines().noneMatch(topic::equals);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
    }

    /** kafka-configs --alter --add-config / --delete-config on a topic, then --describe. */
    @Test
    void kafkaConfigsTopic() throws Exception {
        String topic = name("cli-configs");
        Tool.ok(TOPICS, null, bs("--create", "--topic", topic, "--partitions", "1"));
        Tool.ok(CONFIGS, null, bs("--alter", "--entity-type", "topics", "--entity-name", topic,
                "--add-config", "retention.ms=1234567,max.message.bytes=2000000"));
        Tool d = Tool.ok(CONFIGS, null, bs("--describe", "--entity-type", "topics", "--entity-name", topic));
        assertTrue(d.stdout.contains("retention.ms=1234567"), d.toString());
        assertTrue(d.stdout.contains("max.message.bytes=2000000"), d.toString());

        Tool.ok(CONFIGS, null, bs("--alter", "--entity-type", "topics", "--entity-name", topic,
                "--delete-config", "retention.ms"));
        Tool after = Tool.ok(CONFIGS, null, bs("--describe", "--entity-type", "topics", "--entity-name", topic));
        assertFalse(after.stdout.contains("retention.ms=1234567"), after.toString());
        assertTrue(after.stdout.contains("max.message.bytes=2000000"), after.toString());

        Tool bad = Tool.run(CONFIGS, null, bs("--alter", "--entity-type", "topics", "--entity-name", topic,
                "--add-config", "segment.bytes=lots"));
        assertTrue(bad.status != 0, "a bad value is refused: " + bad);
    }

    /** kafka-configs on the brokers' cluster-wide default and on broker 0. */
    @Test
    void kafkaConfigsBroker() throws Exception {
        Tool.ok(CONFIGS, null, bs("--alter", "--entity-type", "brokers", "--entity-default",
                "--add-config", "log.retention.bytes=1073741824"));
        Tool.ok(CONFIGS, null, bs("--alter", "--entity-type", "brokers", "--entity-name", "0",
                "--add-config", "log.segment.bytes=104857600"));
        try {
            Tool d = Tool.ok(CONFIGS, null, bs("--describe", "--entity-type", "brokers", "--entity-default"));
            assertTrue(d.stdout.contains("log.retention.bytes=1073741824"), d.toString());
            Tool b = Tool.ok(CONFIGS, null, bs("--describe", "--entity-type", "brokers", "--entity-name", "0"));
            assertTrue(b.stdout.contains("log.segment.bytes=104857600"), b.toString());
            Tool bad = Tool.run(CONFIGS, null, bs("--alter", "--entity-type", "brokers", "--entity-name", "0",
                    "--add-config", "log.segment.bytes=tiny"));
            assertTrue(bad.status != 0, "a bad value is refused: " + bad);
        } finally {
            Tool.ok(CONFIGS, null, bs("--alter", "--entity-type", "brokers", "--entity-default",
                    "--delete-config", "log.retention.bytes"));
            Tool.ok(CONFIGS, null, bs("--alter", "--entity-type", "brokers", "--entity-name", "0",
                    "--delete-config", "log.segment.bytes"));
        }
        Tool after = Tool.ok(CONFIGS, null, bs("--describe", "--entity-type", "brokers", "--entity-name", "0"));
        assertFalse(after.stdout.contains("log.segment.bytes=104857600"), after.toString());
    }

    /**
     * kafka-console-producer then kafka-console-consumer in a group;
     * kafka-consumer-groups --describe shows the committed offsets and lag,
     * --reset-offsets moves them.
     */
    @Test
    void consoleProducerConsumerAndGroups() throws Exception {
        String topic = name("cli-console");
        String group = "cli-group-" + topic;
        Tool.ok(TOPICS, null, bs("--create", "--topic", topic, "--partitions", "1"));
        StringBuilder input = new StringBuilder();
        int n = 50;
        for (int i = 0; i < n; i++) {
            input.append("key").append(i).append(':').append("value ").append(i).append('\n');
        }
        Tool.ok(CONSOLE_PRODUCER, input.toString(), bs("--topic", topic,
                "--reader-property", "parse.key=true", "--reader-property", "key.separator=:",
                "--command-property", "acks=all"));

        Tool consumed = Tool.ok(CONSOLE_CONSUMER, null, bs("--topic", topic, "--group", group,
                "--from-beginning", "--max-messages", String.valueOf(n),
                "--formatter-property", "print.key=true", "--formatter-property", "key.separator=:",
                "--command-property", "group.protocol=classic"));
        List<String> lines = consumed.stdout.lines().toList();
        assertEquals(n, lines.size(), consumed.toString());
        for (int i = 0; i < n; i++) {
            assertEquals("key" + i + ":value " + i, lines.get(i));
        }
        TopicPartition tp = new TopicPartition(topic, 0);
        Map<TopicPartition, OffsetAndMetadata> committed =
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        assertEquals(n, committed.get(tp).offset(), "the console consumer committed on exit");

        Tool described = Tool.ok(CONSUMER_GROUPS, null, bs("--describe", "--group", group));
        Matcher m = Pattern.compile(Pattern.quote(topic) + "\\s+0\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)")
                .matcher(described.stdout);
        assertTrue(m.find(), described.toString());
        assertEquals(String.valueOf(n), m.group(1), "CURRENT-OFFSET");
        assertEquals(String.valueOf(n), m.group(2), "LOG-END-OFFSET");
        assertEquals("0", m.group(3), "LAG");

        Tool.ok(CONSUMER_GROUPS, null, bs("--reset-offsets", "--group", group, "--topic", topic,
                "--to-offset", "20", "--execute"));
        committed = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        assertEquals(20, committed.get(tp).offset());
        Tool.ok(CONSUMER_GROUPS, null, bs("--reset-offsets", "--group", group, "--topic", topic,
                "--to-earliest", "--execute"));
        committed = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        assertEquals(0, committed.get(tp).offset());

        Tool list = Tool.ok(CONSUMER_GROUPS, null, bs("--list"));
        assertTrue(list.stdout.lines().anyMatch(group::equals), list.toString());
        Tool.ok(CONSUMER_GROUPS, null, bs("--delete", "--group", group));
        assertFalse(Tool.ok(CONSUMER_GROUPS, null, bs("--list")).stdout.lines().anyMatch(group::equals));
    }

    /** kafka-log-dirs --describe: the JSON lists the topic's partitions with their sizes. */
    @Test
    void kafkaLogDirs() throws Exception {
        String topic = name("cli-logdirs");
        Tool.ok(TOPICS, null, bs("--create", "--topic", topic, "--partitions", "2"));
        Tool.ok(CONSOLE_PRODUCER, "a\nb\nc\n", bs("--topic", topic));
        Tool d = Tool.ok("org.apache.kafka.tools.LogDirsCommand", null,
                bs("--describe", "--topic-list", topic));
        String json = d.stdout.lines().filter(l -> l.startsWith("{")).findFirst().orElse("");
        assertTrue(json.contains("\"partition\":\"" + topic + "-0\""), d.toString());
        assertTrue(json.contains("\"partition\":\"" + topic + "-1\""), d.toString());
        assertTrue(json.contains("\"brokers\":[{\"broker\":0"), d.toString());
    }

    /** kafka-producer-perf-test and kafka-consumer-perf-test move every record. */
    @Test
    void perfTests() throws Exception {
        String topic = name("cli-perf");
        int n = 50_000;
        Tool.ok(TOPICS, null, bs("--create", "--topic", topic, "--partitions", "4"));
        Tool produced = Tool.ok(PRODUCER_PERF, null, "--topic", topic, "--num-records", String.valueOf(n),
                "--record-size", "200", "--throughput", "-1",
                "--producer-props", "bootstrap.servers=" + broker.bootstrap(), "acks=all");
        assertTrue(produced.stdout.contains(n + " records sent"), produced.toString());
        System.out.println("kafka-producer-perf-test: " + produced.stdout.lines().reduce((a, b) -> b).orElse(""));
        long end = 0;
        for (int p = 0; p < 4; p++) {
            TopicPartition tp = new TopicPartition(topic, p);
            end += admin.listOffsets(Map.of(tp, OffsetSpec.latest())).all().get().get(tp).offset();
        }
        assertEquals(n, end, "every record was written");

        Tool consumed = Tool.ok(CONSUMER_PERF, null, bs("--topic", topic, "--messages", String.valueOf(n),
                "--timeout", "60000", "--consumer.config", "/dev/null"));
        // start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, ...
        String data = consumed.stdout.lines().reduce((a, b) -> b).orElse("");
        System.out.println("kafka-consumer-perf-test: " + data);
        String[] fields = data.split(",\\s*");
        assertTrue(fields.length > 5, consumed.toString());
        assertEquals(String.valueOf(n), fields[4].trim(), "data.consumed.in.nMsg: " + consumed);
    }
}
