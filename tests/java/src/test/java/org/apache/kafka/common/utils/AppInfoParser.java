package org.apache.kafka.common.utils;

/**
 * A bridge for Kafka's FileStream connectors, not a Strom part: connect-file
 * 4.4.0 is not served by this machine's Maven mirror, and the newest that is,
 * 4.3.1, calls {@code org.apache.kafka.common.utils.AppInfoParser.getVersion()}
 * in its connectors' {@code version()}; kafka-clients 4.4.0 moved that class
 * to {@code org.apache.kafka.common.utils.internals}. That call is the only
 * reference connect-file 4.3.1 makes that 4.4.0 lacks (checked with javap
 * against kafka-clients, connect-api and connect-runtime 4.4.0), so with this
 * one method on the classpath the 4.3.1 connectors run unmodified in the
 * unmodified 4.4.0 worker. Remove it when connect-file 4.4.0 can be fetched.
 */
public final class AppInfoParser {
    private AppInfoParser() {}

    public static String getVersion() {
        return org.apache.kafka.common.utils.internals.AppInfoParser.getVersion();
    }
}
