package io.strom.compat;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * One real {@code strom serve} process on a free loopback port and a fresh data
 * directory. The binary is the system property {@code strom.bin} (set by the
 * pom, default {@code target/release/strom}); a missing binary fails the test
 * with a message, it never skips.
 */
public final class StromBroker implements AutoCloseable {
    static final long START_TIMEOUT_S = 30;
    static final long STOP_TIMEOUT_S = 30;
    /** Extra broker config for every test: small segments cross segment boundaries. */
    static final String BASE_CONFIG = "log.segment.bytes = 8388608\n";

    private final Path dir;
    private final Process process;
    private final String bootstrap;
    private final Path logPath;

    private StromBroker(Path dir, Process process, String bootstrap, Path logPath) {
        this.dir = dir;
        this.process = process;
        this.bootstrap = bootstrap;
        this.logPath = logPath;
    }

    public static Path binary() {
        String bin = System.getProperty("strom.bin", "../../target/release/strom");
        Path path = Path.of(bin).toAbsolutePath().normalize();
        if (!Files.isExecutable(path)) {
            throw new IllegalStateException(
                path + " not built: run `cargo build --release -p strom-server` (or pass -Dstrom.bin=PATH)");
        }
        return path;
    }

    public static StromBroker start() throws IOException, InterruptedException {
        return start("");
    }

    /** Starts a broker with extra TOML config lines appended to {@link #BASE_CONFIG}. */
    public static StromBroker start(String extraConfig) throws IOException, InterruptedException {
        return start(extraConfig, List.of());
    }

    /** Starts a broker with extra config lines and extra {@code serve} arguments. */
    public static StromBroker start(String extraConfig, List<String> extraArgs)
            throws IOException, InterruptedException {
        Path bin = binary();
        Path dir = Files.createTempDirectory("strom-java-");
        Path config = dir.resolve("strom.toml");
        Files.writeString(config, BASE_CONFIG + extraConfig);
        Path logPath = dir.resolve("strom.log");
        List<String> command = new java.util.ArrayList<>(List.of(
                bin.toString(), "serve",
                "--data-dir", dir.resolve("data").toString(),
                "--listen", "127.0.0.1:0",
                "--shards", "2",
                "--config", config.toString()));
        command.addAll(extraArgs);
        ProcessBuilder pb = new ProcessBuilder(command);
        pb.redirectError(logPath.toFile());
        pb.redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        Process process = pb.start();
        CompletableFuture<String> listening = new CompletableFuture<>();
        Thread reader = new Thread(() -> drainStdout(process, logPath, listening), "strom-stdout");
        reader.setDaemon(true);
        reader.start();
        String addr;
        try {
            addr = listening.get(START_TIMEOUT_S, TimeUnit.SECONDS);
        } catch (ExecutionException | TimeoutException e) {
            process.destroyForcibly();
            throw new IllegalStateException("strom did not start: " + e + "\n" + tail(logPath), e);
        }
        return new StromBroker(dir, process, addr, logPath);
    }

    private static void drainStdout(Process process, Path logPath, CompletableFuture<String> listening) {
        String prefix = "strom listening on ";
        try (BufferedReader r = new BufferedReader(
                new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
            String line;
            while ((line = r.readLine()) != null) {
                if (!listening.isDone() && line.startsWith(prefix)) {
                    listening.complete(line.substring(prefix.length()).trim());
                }
            }
        } catch (IOException e) {
            listening.completeExceptionally(e);
        }
        listening.completeExceptionally(new IllegalStateException(
                "strom exited before listening (status " + exitStatus(process) + ")"));
    }

    private static String exitStatus(Process p) {
        try {
            return p.waitFor(5, TimeUnit.SECONDS) ? String.valueOf(p.exitValue()) : "still running";
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return "unknown";
        }
    }

    static String tail(Path logPath) {
        try {
            List<String> lines = Files.readAllLines(logPath);
            return String.join("\n", lines.subList(Math.max(0, lines.size() - 40), lines.size()));
        } catch (IOException e) {
            return "(no log: " + e + ")";
        }
    }

    public String bootstrap() {
        return bootstrap;
    }

    /** An AdminClient for this broker; the caller closes it. */
    public org.apache.kafka.clients.admin.Admin admin() {
        return org.apache.kafka.clients.admin.Admin.create(java.util.Map.of(
                org.apache.kafka.clients.admin.AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
                org.apache.kafka.clients.admin.AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000));
    }

    /** A topic or group name no other test uses. */
    public static String uniqueName(String prefix) {
        return prefix + "-" + java.util.UUID.randomUUID().toString().substring(0, 8);
    }

    public Path logPath() {
        return logPath;
    }

    public boolean isAlive() {
        return process.isAlive();
    }

    public String logTail() {
        return tail(logPath);
    }

    /** SIGTERM, and a failure if the broker does not exit cleanly in time. */
    @Override
    public void close() throws InterruptedException {
        process.destroy();
        if (!process.waitFor(STOP_TIMEOUT_S, TimeUnit.SECONDS)) {
            process.destroyForcibly();
            throw new IllegalStateException("strom did not stop within " + STOP_TIMEOUT_S + " s\n" + logTail());
        }
        int status = process.exitValue();
        if (status != 0) {
            throw new IllegalStateException("strom exited with " + status + "\n" + logTail());
        }
        deleteTree(dir);
    }

    private static void deleteTree(Path root) {
        try (var paths = Files.walk(root)) {
            paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException ignored) {
            // A temp dir left behind is harmless.
        }
    }
}
