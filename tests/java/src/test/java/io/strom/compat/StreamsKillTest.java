package io.strom.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.Test;

/**
 * Kafka Streams 4.4 ({@link StreamsApp}: a stream-table join and a windowed
 * aggregation, at_least_once) SIGKILLed mid-stream and restarted on an empty
 * state directory: its stores come back from their changelogs, and the latest
 * output per key equals a model computed here.
 */
class StreamsKillTest extends BrokerTest {
    static final Duration TIMEOUT = Duration.ofSeconds(120);
    static final int USERS = 16;
    static final int WINDOWS = 6;
    static final int EVENTS = 6000;
    /** Events sent before the application starts; the rest flow while it runs. */
    static final int FIRST_EVENTS = 500;

    @Test
    void joinAndWindowsSurviveSigkill() throws Exception {
        String app = name("streams-kill");
        String users = app + "-users";
        String events = app + "-events";
        String enriched = app + "-enriched";
        String windowed = app + "-windowed";
        admin.createTopics(List.of(new NewTopic(users, 2, (short) 1), new NewTopic(events, 2, (short) 1),
                new NewTopic(enriched, 2, (short) 1), new NewTopic(windowed, 2, (short) 1))).all().get();
        // Event timestamps cycle through WINDOWS windows that ended minutes ago,
        // so every window gets events both before and after the kill.
        long t0 = (System.currentTimeMillis() - 600_000) / StreamsApp.WINDOW_MS * StreamsApp.WINDOW_MS;
        Map<String, String> enrichedModel = new HashMap<>();
        Map<String, long[]> windowModel = new HashMap<>();
        for (int i = 0; i < EVENTS; i++) {
            String user = user(i % USERS);
            enrichedModel.put("e" + i, "e" + i + "," + amount(i) + "," + region(i % USERS));
            long[] cs = windowModel.computeIfAbsent(user + "@" + windowStart(t0, i), k -> new long[2]);
            cs[0]++;
            cs[1] += amount(i);
        }
        Map<String, String> windowedModel = new HashMap<>();
        windowModel.forEach((k, cs) -> windowedModel.put(k, "count=" + cs[0] + ",sum=" + cs[1]));

        try (KafkaProducer<String, String> producer = producer()) {
            for (int u = 0; u < USERS; u++) {
                producer.send(new ProducerRecord<>(users, null, t0 - 60_000, user(u), region(u))).get();
            }
        }
        String[] args = {broker.bootstrap(), app, null, users, events, enriched, windowed};
        args[2] = Files.createTempDirectory("streams-kill-a-").toString();
        AtomicInteger sent = new AtomicInteger();
        produceEvents(events, t0, 0, FIRST_EVENTS, sent);
        Jvm first = Jvm.start(StreamsApp.class.getName(), List.of(), args);
        Jvm second = null;
        CompletableFuture<Void> writer = null;
        Map<String, String> enrichedLatest = new HashMap<>();
        Map<String, String> windowedLatest = new HashMap<>();
        try (KafkaConsumer<String, String> out = outputReader(enriched, windowed)) {
            // The rest of the events flow (about 6 s) once the application runs,
            // so it is killed while events arrive and are processed.
            Wait.until(TIMEOUT, "the first instance's first output", () -> {
                assertTrue(first.isAlive(), "the first instance died\n" + first.logTail());
                poll(out, enriched, enrichedLatest, windowedLatest);
                return !enrichedLatest.isEmpty();
            });
            writer = CompletableFuture.runAsync(() -> produceEvents(events, t0, FIRST_EVENTS, EVENTS, sent));
            Wait.until(TIMEOUT, "the first instance to join 1500 events and commit", () -> {
                assertTrue(first.isAlive(), "the first instance died\n" + first.logTail());
                poll(out, enriched, enrichedLatest, windowedLatest);
                return enrichedLatest.size() >= 1500 && committed(app, events) > 0;
            });
            long committedAtKill = committed(app, events);
            first.kill();
            int sentAtKill = sent.get();
            // An empty state directory: the second instance has only the changelogs.
            args[2] = Files.createTempDirectory("streams-kill-b-").toString();
            second = Jvm.start(StreamsApp.class.getName(), List.of(), args);
            writer.get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
            Jvm restarted = second;
            try {
                Wait.until(TIMEOUT, "the latest output per key to match the model", () -> {
                    assertTrue(restarted.isAlive(), "the second instance died\n" + restarted.logTail());
                    poll(out, enriched, enrichedLatest, windowedLatest);
                    return enrichedLatest.equals(enrichedModel) && windowedLatest.equals(windowedModel);
                });
            } catch (AssertionError e) {
                throw new AssertionError(e.getMessage() + ": " + differences("enriched", enrichedModel, enrichedLatest)
                        + "; " + differences("windowed", windowedModel, windowedLatest) + "\n" + restarted.logTail(), e);
            }
            System.out.printf("streams kill: %d of %d events sent and %d committed at the kill%n",
                    sentAtKill, EVENTS, committedAtKill);
            assertTrue(committedAtKill > 0 && committedAtKill < EVENTS,
                    "killed mid-stream, after a commit: " + committedAtKill);
        } finally {
            first.close();
            if (second != null) {
                second.close();
            }
        }
        assertEquals(enrichedModel, enrichedLatest);
        assertEquals(windowedModel, windowedLatest);
        ConfigResource window = new ConfigResource(ConfigResource.Type.TOPIC, app + "-window-store-changelog");
        ConfigResource table = new ConfigResource(ConfigResource.Type.TOPIC, app + "-users-store-changelog");
        Map<ConfigResource, Config> cs = admin.describeConfigs(List.of(window, table)).all().get();
        assertEquals("compact,delete", cs.get(window).get("cleanup.policy").value(), "the window changelog");
        assertEquals("compact", cs.get(table).get("cleanup.policy").value(), "the table changelog");
    }

    /** How many keys of the model are missing or differ in the output, with an example. */
    static String differences(String what, Map<String, String> model, Map<String, String> latest) {
        List<String> wrong = model.keySet().stream().filter(k -> !model.get(k).equals(latest.get(k))).sorted().toList();
        return what + ": " + wrong.size() + " of " + model.size() + " keys differ"
                + (wrong.isEmpty() ? "" : " (" + wrong.get(0) + ": expected " + model.get(wrong.get(0))
                        + ", got " + latest.get(wrong.get(0)) + ")");
    }

    static String user(int u) {
        return String.format("user-%02d", u);
    }

    static String region(int u) {
        return "region-" + (u % 5);
    }

    static int amount(int i) {
        return i % 97 + 1;
    }

    static long windowStart(long t0, int i) {
        return t0 + (long) ((i / USERS) % WINDOWS) * StreamsApp.WINDOW_MS;
    }

    static KafkaProducer<String, String> producer() {
        return new KafkaProducer<>(Map.of(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap(),
                ProducerConfig.ACKS_CONFIG, "all"), new StringSerializer(), new StringSerializer());
    }

    /** Sends events [from, to) in chunks of 50 every 50 ms (about 1000 a second). */
    static void produceEvents(String topic, long t0, int from, int to, AtomicInteger sent) {
        int chunk = 50;
        try (KafkaProducer<String, String> producer = producer()) {
            for (int i = from; i < to; i += chunk) {
                for (int j = i; j < i + chunk; j++) {
                    long ts = windowStart(t0, j) + j % 1000;
                    producer.send(new ProducerRecord<>(topic, null, ts, user(j % USERS), "e" + j + "," + amount(j)));
                }
                producer.flush();
                sent.set(i + chunk);
                Thread.sleep(50);
            }
        } catch (InterruptedException e) {
            throw new CompletionException(e);
        }
    }

    static KafkaConsumer<String, String> outputReader(String... topics) {
        KafkaConsumer<String, String> c = new KafkaConsumer<>(Map.of(
                ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap(),
                ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest"),
                new StringDeserializer(), new StringDeserializer());
        List<TopicPartition> tps = new java.util.ArrayList<>();
        for (String t : topics) {
            tps.add(new TopicPartition(t, 0));
            tps.add(new TopicPartition(t, 1));
        }
        c.assign(tps);
        c.seekToBeginning(tps);
        return c;
    }

    /** Reads what the outputs have, keeping the latest value per key (each key lives in one partition). */
    static void poll(KafkaConsumer<String, String> c, String enriched, Map<String, String> enrichedLatest,
            Map<String, String> windowedLatest) {
        for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
            (r.topic().equals(enriched) ? enrichedLatest : windowedLatest).put(r.key(), r.value());
        }
    }

    /** The application's committed offsets on {@code topic}, summed over partitions (0 if none). */
    static long committed(String app, String topic) {
        try {
            Map<TopicPartition, OffsetAndMetadata> offsets = admin.listConsumerGroupOffsets(app)
                    .partitionsToOffsetAndMetadata().get();
            return offsets.entrySet().stream().filter(e -> e.getKey().topic().equals(topic) && e.getValue() != null)
                    .mapToLong(e -> e.getValue().offset()).sum();
        } catch (Exception e) {
            return 0;
        }
    }
}
