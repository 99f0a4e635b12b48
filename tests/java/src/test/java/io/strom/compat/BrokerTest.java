package io.strom.compat;

import org.apache.kafka.clients.admin.Admin;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/** A test class with one broker (and one AdminClient) for all its tests. */
abstract class BrokerTest {
    static StromBroker broker;
    static Admin admin;

    @BeforeAll
    static void startBroker() throws Exception {
        broker = StromBroker.start();
        admin = broker.admin();
    }

    @AfterAll
    static void stopBroker() throws Exception {
        if (admin != null) {
            admin.close();
        }
        if (broker != null) {
            broker.close();
        }
    }

    static String name(String prefix) {
        return StromBroker.uniqueName(prefix);
    }
}
