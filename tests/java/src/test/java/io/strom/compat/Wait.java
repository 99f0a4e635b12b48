package io.strom.compat;

import java.time.Duration;
import java.util.function.BooleanSupplier;

/** Waiting on a condition with a bounded deadline, never a bare sleep. */
final class Wait {
    private Wait() {}

    static void until(Duration timeout, String what, BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out after " + timeout + " waiting for " + what);
            }
            Thread.sleep(50);
        }
    }
}
