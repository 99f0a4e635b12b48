package io.strom.compat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A long-running main class (a Connect worker, a Streams application) in a
 * JVM of its own, on this test's classpath, so a test can SIGKILL it the way
 * a crash or an OOM killer would. Its stdout and stderr go to a log file under
 * {@link #LOG_DIR} that failures quote.
 */
final class Jvm implements AutoCloseable {
    static final long STOP_TIMEOUT_S = 60;
    /** Kept after the run (under Maven's target/, relative to tests/java) for a failure's post-mortem. */
    static final Path LOG_DIR = Path.of("target", "jvm-logs");

    private final String mainClass;
    private final Process process;
    private final Path log;

    private Jvm(String mainClass, Process process, Path log) {
        this.mainClass = mainClass;
        this.process = process;
        this.log = log;
    }

    /** Starts {@code mainClass} with {@code args}; {@code jvmArgs} are -D and -X options. */
    static Jvm start(String mainClass, List<String> jvmArgs, String... args) throws IOException {
        Path java = Path.of(System.getProperty("java.home"), "bin", "java");
        List<String> cmd = new ArrayList<>(List.of(java.toString(), "-Xmx512m"));
        cmd.addAll(jvmArgs);
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), mainClass));
        cmd.addAll(List.of(args));
        Files.createDirectories(LOG_DIR);
        Path log = Files.createTempFile(LOG_DIR, mainClass.substring(mainClass.lastIndexOf('.') + 1) + "-", ".log");
        Process p = new ProcessBuilder(cmd)
                .redirectErrorStream(true)
                .redirectOutput(log.toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .start();
        return new Jvm(mainClass, p, log);
    }

    boolean isAlive() {
        return process.isAlive();
    }

    /** SIGKILL (what {@link Process#destroyForcibly} sends on Linux), and waits for the exit. */
    void kill() throws InterruptedException {
        process.destroyForcibly();
        if (!process.waitFor(STOP_TIMEOUT_S, TimeUnit.SECONDS)) {
            throw new IllegalStateException(mainClass + " survived SIGKILL for " + STOP_TIMEOUT_S + " s");
        }
    }

    String logTail() {
        return StromBroker.tail(log);
    }

    Path log() {
        return log;
    }

    /** SIGTERM, then SIGKILL if it does not exit in time; the log is kept for a failed test. */
    @Override
    public void close() throws InterruptedException {
        if (!process.isAlive()) {
            return;
        }
        process.destroy();
        if (!process.waitFor(STOP_TIMEOUT_S, TimeUnit.SECONDS)) {
            kill();
        }
    }
}
