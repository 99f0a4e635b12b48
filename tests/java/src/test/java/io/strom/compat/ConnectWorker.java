package io.strom.compat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;

/**
 * A Kafka Connect 4.4 worker in distributed mode ({@code ConnectDistributed},
 * unmodified) in a JVM of its own, with its three compacted internal topics on
 * the broker, and a small client for its REST API. Workers started with the
 * same {@code group} share the connectors, their configs, offsets and status.
 */
final class ConnectWorker implements AutoCloseable {
    static final Duration REST_TIMEOUT = Duration.ofSeconds(30);
    static final Duration START_TIMEOUT = Duration.ofSeconds(90);
    static final ObjectMapper JSON = new ObjectMapper();

    /**
     * The worker's config: bootstrap, group, REST port and the three internal
     * topics are filled in. Source offsets and sink consumer offsets are
     * committed every second (Kafka's default: a minute), so a kill test loses
     * little progress. The connectors are found by their service manifests on
     * the classpath, without a slow scan of every jar. A dead worker's
     * connectors move at once (Kafka waits up to 5 minutes for it to come
     * back), and a dead worker or sink consumer leaves its group after 6 s
     * (Kafka's consumer default: 45 s). Sink consumers use the classic group
     * protocol Strom speaks.
     */
    static final String WORKER_CONFIG = """
            bootstrap.servers=%s
            group.id=%s
            listeners=http://127.0.0.1:%d
            config.storage.topic=%s
            offset.storage.topic=%s
            status.storage.topic=%s
            config.storage.replication.factor=1
            offset.storage.replication.factor=1
            status.storage.replication.factor=1
            offset.storage.partitions=5
            status.storage.partitions=3
            key.converter=org.apache.kafka.connect.storage.StringConverter
            value.converter=org.apache.kafka.connect.storage.StringConverter
            offset.flush.interval.ms=1000
            plugin.discovery=service_load
            scheduled.rebalance.max.delay.ms=0
            session.timeout.ms=6000
            heartbeat.interval.ms=1000
            consumer.group.protocol=classic
            consumer.session.timeout.ms=6000
            consumer.heartbeat.interval.ms=1000
            """;

    final String group;
    final String url;
    private final Jvm jvm;
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

    private ConnectWorker(String group, String url, Jvm jvm) {
        this.group = group;
        this.url = url;
        this.jvm = jvm;
    }

    /** A response: the HTTP status and the body parsed as JSON (null when empty). */
    record Reply(int status, JsonNode body) {
        @Override
        public String toString() {
            return status + " " + body;
        }
    }

    static String configTopic(String group) {
        return group + "-configs";
    }

    static String offsetTopic(String group) {
        return group + "-offsets";
    }

    static String statusTopic(String group) {
        return group + "-status";
    }

    /** Starts a worker of {@code group} and waits until its REST API lists connectors (it joined the group). */
    static ConnectWorker start(StromBroker broker, String group) throws Exception {
        int port = Ports.free();
        Path props = Files.createTempFile("connect-worker-", ".properties");
        Files.writeString(props, String.format(WORKER_CONFIG, broker.bootstrap(), group, port,
                configTopic(group), offsetTopic(group), statusTopic(group)));
        Jvm jvm = Jvm.start("org.apache.kafka.connect.cli.ConnectDistributed",
                List.of("-Dorg.slf4j.simpleLogger.defaultLogLevel=info"), props.toString());
        ConnectWorker w = new ConnectWorker(group, "http://127.0.0.1:" + port, jvm);
        try {
            w.awaitReady();
        } catch (Throwable t) {
            w.close();
            throw t;
        }
        return w;
    }

    private void awaitReady() throws Exception {
        long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
        while (true) {
            if (!jvm.isAlive()) {
                throw new AssertionError("the Connect worker exited\n" + jvm.logTail());
            }
            try {
                if (get("/connectors").status() == 200) {
                    return;
                }
            } catch (IOException notYetListening) {
                // The REST server is not up yet.
            }
            if (System.nanoTime() > deadline) {
                throw new AssertionError("the Connect worker was not ready within " + START_TIMEOUT + "\n"
                        + jvm.logTail());
            }
            Thread.sleep(200);
        }
    }

    Reply get(String path) throws IOException, InterruptedException {
        return send(HttpRequest.newBuilder(URI.create(url + path)).GET());
    }

    Reply post(String path, Object body) throws IOException, InterruptedException {
        return send(HttpRequest.newBuilder(URI.create(url + path))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(JSON.writeValueAsString(body))));
    }

    Reply put(String path) throws IOException, InterruptedException {
        return send(HttpRequest.newBuilder(URI.create(url + path)).PUT(HttpRequest.BodyPublishers.noBody()));
    }

    Reply delete(String path) throws IOException, InterruptedException {
        return send(HttpRequest.newBuilder(URI.create(url + path)).DELETE());
    }

    private Reply send(HttpRequest.Builder request) throws IOException, InterruptedException {
        HttpResponse<String> r = http.send(request.timeout(REST_TIMEOUT).build(),
                HttpResponse.BodyHandlers.ofString());
        boolean json = r.headers().firstValue("Content-Type").orElse("").startsWith("application/json");
        JsonNode body = r.body().isEmpty() ? null
                : json ? JSON.readTree(r.body()) : JSON.getNodeFactory().textNode(r.body());
        return new Reply(r.statusCode(), body);
    }

    /**
     * Creates a connector, retrying while the worker answers 409 (a rebalance
     * in progress, which Connect reports that way); fails on anything but 201.
     */
    Reply create(String name, Map<String, String> config) throws Exception {
        Map<String, Object> body = Map.of("name", name, "config", config);
        long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
        while (true) {
            Reply r = post("/connectors", body);
            if (r.status() == 201) {
                return r;
            }
            if (r.status() != 409 || System.nanoTime() > deadline) {
                throw new AssertionError("creating " + name + ": " + r + "\n" + jvm.logTail());
            }
            Thread.sleep(200);
        }
    }

    /** Waits until the connector and each of its {@code tasks} tasks report {@code state}. */
    void awaitState(String name, String state, int tasks) throws Exception {
        Wait.until(START_TIMEOUT, name + " and " + tasks + " task(s) " + state, () -> {
            try {
                Reply r = get("/connectors/" + name + "/status");
                if (r.status() != 200) {
                    return false;
                }
                JsonNode ts = r.body().get("tasks");
                if (!state.equals(r.body().get("connector").get("state").asText()) || ts.size() != tasks) {
                    return false;
                }
                for (JsonNode t : ts) {
                    if (!state.equals(t.get("state").asText())) {
                        return false;
                    }
                }
                return true;
            } catch (IOException | InterruptedException e) {
                return false;
            }
        });
    }

    String logTail() {
        return jvm.logTail();
    }

    /** SIGKILL: no offset flush, no leaving the group, no status update. */
    void kill() throws InterruptedException {
        jvm.kill();
    }

    @Override
    public void close() throws InterruptedException {
        jvm.close();
    }
}
