package io.strom.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.junit.jupiter.api.Test;

/** A Kafka Streams 4.4 application against the real broker. */
class StreamsTest extends BrokerTest {
    static final String[] WORDS = {"strom", "kafka", "streams", "log", "shard", "batch", "core"};

    static KafkaStreams wordCount(String app, String input, String output, Path stateDir) {
        StreamsBuilder b = new StreamsBuilder();
        b.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(line -> Arrays.asList(line.split(" ")))
                .groupBy((k, word) -> word, Grouped.with(Serdes.String(), Serdes.String()))
                .count(Materialized.as("counts-store"))
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, app);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.GROUP_PROTOCOL_CONFIG), "classic");
        return new KafkaStreams(b.build(), p);
    }

    /**
     * Word count with a persistent store: the output's last count per word
     * matches a model, also after a restart that restores the store from
     * its changelog.
     */
    @Test
    void wordCount() throws Exception {
        String app = name("wordcount");
        String input = app + "-lines";
        String output = app + "-counts";
        admin.createTopics(List.of(new NewTopic(input, 2, (short) 1), new NewTopic(output, 2, (short) 1)))
                .all().get();
        Map<String, Long> model = new HashMap<>();
        produceLines(input, 0, 500, model);
        Map<String, Long> latest = new HashMap<>();
        runUntilCounted(app, input, output, model, latest);
        // The second run starts from an empty state directory, so its store
        // is restored from the changelog topic; new lines add to the old counts.
        produceLines(input, 500, 800, model);
        runUntilCounted(app, input, output, model, latest);
        String changelog = app + "-counts-store-changelog";
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, changelog);
        Config c = admin.describeConfigs(List.of(r)).all().get().get(r);
        assertEquals("compact", c.get("cleanup.policy").value(), "the store's changelog is compacted");
    }

    static void produceLines(String input, int from, int to, Map<String, Long> model) {
        Map<String, Object> pp = Map.of(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap(),
                ProducerConfig.ACKS_CONFIG, "all");
        try (KafkaProducer<String, String> producer =
                new KafkaProducer<>(pp, new StringSerializer(), new StringSerializer())) {
            for (int i = from; i < to; i++) {
                String line = WORDS[i % WORDS.length] + " " + WORDS[(i * 3 + i / 7) % WORDS.length];
                for (String w : line.split(" ")) {
                    model.merge(w, 1L, Long::sum);
                }
                producer.send(new ProducerRecord<>(input, "line" + i, line));
            }
        }
    }

    /** Runs the application on a fresh state directory until the output's last counts equal the model. */
    static void runUntilCounted(String app, String input, String output, Map<String, Long> model,
            Map<String, Long> latest) throws Exception {
        Path stateDir = Files.createTempDirectory("streams-state-");
        try (KafkaStreams streams = wordCount(app, input, output, stateDir)) {
            streams.start();
            Map<String, Object> cp = Map.of(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap(),
                    ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest",
                    ConsumerConfig.GROUP_ID_CONFIG, app + "-reader",
                    ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
            try (KafkaConsumer<String, Long> consumer =
                    new KafkaConsumer<>(cp, new StringDeserializer(), new LongDeserializer())) {
                consumer.subscribe(List.of(output));
                long deadline = System.nanoTime() + Duration.ofSeconds(120).toNanos();
                while (!latest.equals(model) && System.nanoTime() < deadline) {
                    for (ConsumerRecord<String, Long> r : consumer.poll(Duration.ofMillis(200))) {
                        latest.put(r.key(), r.value());
                    }
                    assertTrue(streams.state() != KafkaStreams.State.ERROR, "streams failed");
                }
            }
            assertEquals(model, latest, "the last count per word");
        }
    }
}
