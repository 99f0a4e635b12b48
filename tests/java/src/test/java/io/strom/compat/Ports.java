package io.strom.compat;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.ThreadLocalRandom;

/**
 * Ports for servers a test configures before it starts them (controllers,
 * Connect's REST API). They come from below the kernel's ephemeral range: a
 * port taken from {@code new ServerSocket(0)} and released is free only until
 * an outgoing connection of any process takes it as its local port, and in CI
 * a cluster node's controller then failed with "Address already in use".
 */
final class Ports {
    static final int LOWEST = 10000;
    private static final Set<Integer> GIVEN = new HashSet<>();

    private Ports() {}

    /** The low end of {@code /proc/sys/net/ipv4/ip_local_port_range}. */
    static int ephemeralLow() throws IOException {
        // Files.readString gives the first byte only of this procfs file
        // (JDK 17 trusts its size); lines are read up to their end.
        String range = Files.readAllLines(Path.of("/proc/sys/net/ipv4/ip_local_port_range")).get(0).trim();
        return Integer.parseInt(range.split("\\s+")[0]);
    }

    /** A loopback port nobody has bound now, never one given before in this JVM. */
    static synchronized int free() throws IOException {
        int low = ephemeralLow();
        if (low - LOWEST < 1000) {
            throw new IllegalStateException("the ephemeral range starts at " + low + ": too few ports below it");
        }
        for (int i = 0; i < 10000; i++) {
            int port = ThreadLocalRandom.current().nextInt(LOWEST, low);
            if (GIVEN.contains(port)) {
                continue;
            }
            try (ServerSocket s = new ServerSocket()) {
                s.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), port));
            } catch (IOException taken) {
                continue;
            }
            GIVEN.add(port);
            return port;
        }
        throw new IllegalStateException("no free port in [" + LOWEST + ", " + low + ")");
    }
}
