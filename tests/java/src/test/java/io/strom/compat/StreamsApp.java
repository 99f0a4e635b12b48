package io.strom.compat;

import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.state.WindowStore;

/**
 * A Kafka Streams 4.4 application ({@code at_least_once}) that a test runs in
 * a JVM of its own so it can SIGKILL it: events keyed by user, joined with a
 * users table (a stream-table join), and aggregated per user in tumbling
 * windows of {@link #WINDOW_MS}. Both stores have changelogs on the broker.
 *
 * <p>Events are {@code "id,amount"}; a user's row is its region. The join
 * writes {@code "id,amount,region"} keyed by event id to the enriched topic;
 * the window aggregate is the set of {@code id:amount} the window saw, written
 * as {@code "count=N,sum=S"} keyed {@code user@windowStart}. The aggregate is
 * a set, not a running count, on purpose: under at-least-once a crash replays
 * the events after the last commit into a store that its changelog may have
 * already brought past them, and a set makes that replay harmless, so the
 * latest output per key is exactly the model's.
 *
 * <p>Arguments: bootstrap, application id, state dir, users topic, events
 * topic, enriched topic, windowed topic.
 */
public final class StreamsApp {
    static final long WINDOW_MS = 10_000;
    /** Late events are not dropped: the test's timestamps span a minute, out of order. */
    static final Duration GRACE = Duration.ofHours(1);

    private StreamsApp() {}

    static KafkaStreams build(String bootstrap, String app, String stateDir, String users, String events,
            String enriched, String windowed) {
        StreamsBuilder b = new StreamsBuilder();
        KTable<String, String> regions = b.table(users, Consumed.with(Serdes.String(), Serdes.String()),
                Materialized.as("users-store"));
        KStream<String, String> stream = b.stream(events, Consumed.with(Serdes.String(), Serdes.String()));
        stream.join(regions, (event, region) -> event + "," + region)
                .selectKey((user, value) -> value.substring(0, value.indexOf(',')))
                .to(enriched, Produced.with(Serdes.String(), Serdes.String()));
        stream.groupByKey(Grouped.with(Serdes.String(), Serdes.String()))
                .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMillis(WINDOW_MS), GRACE))
                .aggregate(() -> "", (user, event, set) -> addToSet(set, event),
                        Materialized.<String, String, WindowStore<Bytes, byte[]>>as("window-store")
                                .withKeySerde(Serdes.String()).withValueSerde(Serdes.String()))
                .toStream((w, set) -> w.key() + "@" + w.window().start())
                .mapValues(StreamsApp::summarize)
                .to(windowed, Produced.with(Serdes.String(), Serdes.String()));
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, app);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.GROUP_PROTOCOL_CONFIG), "classic");
        // A killed instance's member leaves the group after 6 s (Kafka's default: 45 s).
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 6000);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 1000);
        return new KafkaStreams(b.build(), p);
    }

    /** The set {@code "id:amount;..."} with one more event {@code "id,amount"}; adding twice changes nothing. */
    static String addToSet(String set, String event) {
        Map<String, String> entries = parseSet(set);
        int comma = event.indexOf(',');
        entries.put(event.substring(0, comma), event.substring(comma + 1));
        StringBuilder out = new StringBuilder();
        entries.forEach((id, amount) -> out.append(out.length() == 0 ? "" : ";").append(id).append(':').append(amount));
        return out.toString();
    }

    static Map<String, String> parseSet(String set) {
        Map<String, String> entries = new TreeMap<>();
        if (!set.isEmpty()) {
            for (String e : set.split(";")) {
                int colon = e.indexOf(':');
                entries.put(e.substring(0, colon), e.substring(colon + 1));
            }
        }
        return entries;
    }

    static String summarize(String set) {
        Map<String, String> entries = parseSet(set);
        long sum = entries.values().stream().mapToLong(Long::parseLong).sum();
        return "count=" + entries.size() + ",sum=" + sum;
    }

    public static void main(String[] args) throws InterruptedException {
        if (args.length != 7) {
            System.err.println("usage: StreamsApp bootstrap app-id state-dir users events enriched windowed");
            System.exit(2);
        }
        KafkaStreams streams = build(args[0], args[1], args[2], args[3], args[4], args[5], args[6]);
        CountDownLatch done = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            System.out.println("streams state " + before + " -> " + now);
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                done.countDown();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(30));
            done.countDown();
        }));
        streams.start();
        done.await();
        // An application that fails exits non-zero, so the test sees it.
        System.exit(streams.state() == KafkaStreams.State.ERROR ? 1 : 0);
    }
}
