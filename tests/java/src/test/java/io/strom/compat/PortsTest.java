package io.strom.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashSet;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** The ports {@link Ports} hands out cannot be taken by an outgoing connection first. */
class PortsTest {
    @Test
    void portsLieBelowTheEphemeralRangeAndNeverRepeat() throws Exception {
        int low = Ports.ephemeralLow();
        Set<Integer> seen = new HashSet<>();
        for (int i = 0; i < 200; i++) {
            int port = Ports.free();
            assertTrue(port >= Ports.LOWEST && port < low, "port " + port + " is not in [" + Ports.LOWEST + ", " + low + ")");
            seen.add(port);
        }
        assertEquals(200, seen.size(), "a port was handed out twice");
    }
}
