package io.strom.compat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Runs one of Kafka's CLI tools the way its shell script does: its main
 * class in a JVM of its own (the tools end with System.exit), on this test's
 * classpath, with a bounded run time.
 */
final class Tool {
    static final long TIMEOUT_S = 120;

    final int status;
    final String stdout;
    final String stderr;

    private Tool(int status, String stdout, String stderr) {
        this.status = status;
        this.stdout = stdout;
        this.stderr = stderr;
    }

    static Tool run(String mainClass, String stdin, String... args) throws IOException, InterruptedException {
        Path java = Path.of(System.getProperty("java.home"), "bin", "java");
        List<String> cmd = new ArrayList<>(List.of(
                java.toString(), "-Xmx512m", "-cp", System.getProperty("java.class.path"), mainClass));
        cmd.addAll(List.of(args));
        Path out = Files.createTempFile("tool-out-", ".txt");
        Path err = Files.createTempFile("tool-err-", ".txt");
        ProcessBuilder pb = new ProcessBuilder(cmd)
                .redirectOutput(out.toFile())
                .redirectError(err.toFile());
        Process p = pb.start();
        try (var in = p.getOutputStream()) {
            if (stdin != null) {
                in.write(stdin.getBytes(StandardCharsets.UTF_8));
            }
        }
        if (!p.waitFor(TIMEOUT_S, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError(mainClass + " did not finish within " + TIMEOUT_S + " s: "
                    + String.join(" ", args) + "\n" + Files.readString(err));
        }
        Tool t = new Tool(p.exitValue(), Files.readString(out), Files.readString(err));
        Files.deleteIfExists(out);
        Files.deleteIfExists(err);
        return t;
    }

    /** Runs the tool and fails the test unless it exits 0. */
    static Tool ok(String mainClass, String stdin, String... args) throws IOException, InterruptedException {
        Tool t = run(mainClass, stdin, args);
        if (t.status != 0) {
            throw new AssertionError(mainClass + " " + String.join(" ", args) + " exited " + t.status
                    + "\nstdout:\n" + t.stdout + "\nstderr:\n" + t.stderr);
        }
        return t;
    }

    @Override
    public String toString() {
        return "status " + status + "\nstdout:\n" + stdout + "\nstderr:\n" + stderr;
    }
}
