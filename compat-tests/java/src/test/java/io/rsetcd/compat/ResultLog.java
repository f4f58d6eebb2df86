package io.rsetcd.compat;

import java.util.Optional;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * Prints one line per test that did not pass, so the console shows the reason next to the
 * name: {@code SKIPPED AuthTest.x [rsetcd]: expected failure on rsetcd: ...} and
 * {@code FAILED KvTest.y [rsetcd]: <message>} (Surefire itself prints only counts for
 * skipped tests).
 */
public final class ResultLog implements TestWatcher {
    private static String name(ExtensionContext ctx) {
        String cls = ctx.getRequiredTestClass().getSimpleName();
        String method = ctx.getTestMethod().map(m -> m.getName()).orElse("?");
        return cls + "." + method + " " + ctx.getDisplayName(); // display name: [etcd] / [rsetcd]
    }

    @Override
    public void testAborted(ExtensionContext ctx, Throwable cause) {
        System.out.println("SKIPPED " + name(ctx) + ": " + cause.getMessage());
    }

    @Override
    public void testFailed(ExtensionContext ctx, Throwable cause) {
        String msg = String.valueOf(cause.getMessage()).lines().findFirst().orElse("");
        System.out.println("FAILED  " + name(ctx) + ": " + msg);
    }

    @Override
    public void testDisabled(ExtensionContext ctx, Optional<String> reason) {
        System.out.println("DISABLED " + name(ctx) + ": " + reason.orElse(""));
    }
}
