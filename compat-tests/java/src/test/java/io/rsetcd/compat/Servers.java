package io.rsetcd.compat;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Comparator;
import java.util.EnumMap;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Named;
import org.junit.jupiter.params.provider.Arguments;

/**
 * The servers of a test run.
 *
 * <ul>
 *   <li>{@link #kinds()}: the parameter source of every test ({@code [etcd]} and
 *       {@code [rsetcd]}; {@code -Dcompat.servers=etcd} runs one of them only).</li>
 *   <li>{@link #shared(ServerKind)}: one server per kind, started on first use and shared by
 *       the tests that work under their own key prefix; stopped when the test JVM exits.</li>
 *   <li>{@link #fresh(ServerKind)}: a new server for one test (Auth, which changes the whole
 *       server's state); the test closes it.</li>
 * </ul>
 *
 * Server data and logs: {@code target/servers/<kind>-<n>/} (emptied at the start of a run).
 */
public final class Servers {
    private static final Map<ServerKind, EtcdServer> SHARED = new EnumMap<>(ServerKind.class);
    private static final Map<ServerKind, String> FAILED = new EnumMap<>(ServerKind.class);
    private static final AtomicInteger SEQ = new AtomicInteger();
    private static Path baseDir;
    private static String referenceVersion;

    private Servers() {
    }

    /** Parameter source: both server kinds, named by label. */
    public static Stream<Arguments> kinds() {
        String sel = System.getProperty("compat.servers", "etcd,rsetcd");
        Set<String> wanted = Arrays.stream(sel.split(","))
            .map(s -> s.trim().toLowerCase(Locale.ROOT)).collect(Collectors.toSet());
        return Stream.of(ServerKind.values())
            .filter(k -> wanted.contains(k.label()))
            .map(k -> Arguments.of(Named.of(k.label(), k)));
    }

    /** The shared server of this kind (started on first use); fails fast if it died. */
    public static synchronized EtcdServer shared(ServerKind kind) {
        if (FAILED.containsKey(kind)) {
            return Assertions.fail(kind + " server is not usable: " + FAILED.get(kind));
        }
        EtcdServer s = SHARED.get(kind);
        if (s != null && !s.isAlive()) {
            String msg = "the shared " + kind + " server exited during the run; log "
                + s.logFile() + " ends with:\n" + s.logTail(3000);
            FAILED.put(kind, msg);
            return Assertions.fail(msg);
        }
        if (s == null) {
            try {
                s = EtcdServer.start(kind, newWorkdir(kind));
            } catch (RuntimeException e) {
                FAILED.put(kind, e.getMessage());
                throw e;
            }
            SHARED.put(kind, s);
        }
        return s;
    }

    /** A new server of this kind for one test; the caller closes it. */
    public static EtcdServer fresh(ServerKind kind) {
        return EtcdServer.start(kind, newWorkdir(kind));
    }

    /** Closes the clients a test made on the shared servers (they stay up). */
    public static synchronized void closeSharedClients() {
        SHARED.values().forEach(EtcdServer::closeClients);
    }

    /**
     * The version the reference etcd reports ({@code etcd --version}, "etcd Version: X"):
     * rsetcd claims etcd's version, so both servers' Status must report this one.
     */
    public static synchronized String referenceVersion() {
        if (referenceVersion == null) {
            Path bin = ServerKind.ETCD.checkedBinary();
            try {
                Process p = new ProcessBuilder(bin.toString(), "--version").redirectErrorStream(true).start();
                String out;
                try (BufferedReader r = new BufferedReader(
                    new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
                    out = r.lines().collect(Collectors.joining("\n"));
                }
                p.waitFor();
                Matcher m = Pattern.compile("etcd Version: (\\S+)").matcher(out);
                if (!m.find()) {
                    throw new IllegalStateException("no version in `" + bin + " --version`: " + out);
                }
                referenceVersion = m.group(1);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException(e);
            }
        }
        return referenceVersion;
    }

    private static synchronized Path newWorkdir(ServerKind kind) {
        if (baseDir == null) {
            baseDir = Path.of(System.getProperty("compat.workdir", "target/servers")).toAbsolutePath();
            deleteTree(baseDir);
            Runtime.getRuntime().addShutdownHook(new Thread(Servers::stopShared, "stop-servers"));
        }
        return baseDir.resolve(kind.label() + "-" + SEQ.incrementAndGet());
    }

    private static synchronized void stopShared() {
        SHARED.values().forEach(EtcdServer::close);
        SHARED.clear();
    }

    private static void deleteTree(Path dir) {
        if (!Files.exists(dir)) {
            return;
        }
        try (Stream<Path> walk = Files.walk(dir)) {
            walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
