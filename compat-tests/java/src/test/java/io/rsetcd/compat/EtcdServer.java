package io.rsetcd.compat;

import io.etcd.jetcd.Client;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;

/**
 * One fresh single-member server (etcd or rsetcd) started with etcd's flags on free
 * 127.0.0.1 ports, with its output in {@code <workdir>/server.log}. Ready once the log holds
 * etcd's "ready to serve client requests" line. {@link #close()} stops it (SIGTERM, then
 * SIGKILL after 10 s) and closes the clients made by {@link #client()}.
 */
public final class EtcdServer implements AutoCloseable {
    public static final String READY_LINE = "ready to serve client requests";
    public static final String MEMBER_NAME = "s1";
    private static final Duration READY_TIMEOUT = Duration.ofSeconds(30);
    private static final int START_ATTEMPTS = 3;
    // Below the kernel's ephemeral range (32768-60999 here) so that no outgoing connection
    // of another process takes a port between our check and the server's bind.
    private static final int PORT_MIN = 20000;
    private static final int PORT_MAX = 32767;

    private final ServerKind kind;
    private final Path binary;
    private final Path workdir;
    private final Path log;
    private final List<Client> clients = new ArrayList<>();
    private Process process;
    private int clientPort;
    private int peerPort;

    private EtcdServer(ServerKind kind, Path workdir) {
        this.kind = kind;
        this.binary = kind.checkedBinary();
        this.workdir = workdir;
        this.log = workdir.resolve("server.log");
    }

    /** Starts a new server of this kind with its data and log under {@code workdir}. */
    public static EtcdServer start(ServerKind kind, Path workdir) {
        try {
            Files.createDirectories(workdir);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        EtcdServer s = new EtcdServer(kind, workdir);
        s.startProcess();
        return s;
    }

    public ServerKind kind() {
        return kind;
    }

    public String clientUrl() {
        return "http://127.0.0.1:" + clientPort;
    }

    public String peerUrl() {
        return "http://127.0.0.1:" + peerPort;
    }

    public Path logFile() {
        return log;
    }

    public boolean isAlive() {
        return process != null && process.isAlive();
    }

    /** A new jetcd client of this server, closed with the server (or earlier by the caller). */
    public synchronized Client client() {
        Client c = Client.builder().endpoints(clientUrl()).build();
        clients.add(c);
        return c;
    }

    /** A client with user and password (for the Auth tests). */
    public synchronized Client client(String user, String password) {
        Client c = Client.builder().endpoints(clientUrl())
            .user(Bytes.bs(user)).password(Bytes.bs(password)).build();
        clients.add(c);
        return c;
    }

    /** Closes the clients made so far (the server keeps running). */
    public synchronized void closeClients() {
        for (Client c : clients) {
            try {
                c.close();
            } catch (RuntimeException ignored) {
                // closing a client whose server died: nothing left to release
            }
        }
        clients.clear();
    }

    private void startProcess() {
        String last = "";
        for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
            clientPort = freePort(-1);
            peerPort = freePort(clientPort);
            Path dataDir = workdir.resolve("data-" + clientPort);
            List<String> cmd = List.of(binary.toString(),
                "--name", MEMBER_NAME,
                "--data-dir", dataDir.toString(),
                "--listen-client-urls", clientUrl(),
                "--advertise-client-urls", clientUrl(),
                "--listen-peer-urls", peerUrl(),
                "--initial-advertise-peer-urls", peerUrl(),
                "--initial-cluster", MEMBER_NAME + "=" + peerUrl());
            long logStart;
            try {
                Files.writeString(log, "$ " + String.join(" ", cmd) + "\n", StandardCharsets.UTF_8,
                    java.nio.file.StandardOpenOption.CREATE, java.nio.file.StandardOpenOption.APPEND);
                logStart = Files.size(log);
                process = new ProcessBuilder(cmd)
                    .directory(workdir.toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                    .redirectErrorStream(true)
                    .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
                    .start();
            } catch (IOException e) {
                throw new UncheckedIOException("cannot start " + binary, e);
            }
            long deadline = System.nanoTime() + READY_TIMEOUT.toNanos();
            String text = "";
            while (System.nanoTime() < deadline) {
                text = readLogFrom(logStart);
                if (text.contains(READY_LINE)) {
                    return;
                }
                if (!process.isAlive()) {
                    break;
                }
                sleep(20);
            }
            text = readLogFrom(logStart);
            last = tail(text, 3000);
            stopProcess();
            if (text.contains("address already in use")) {
                continue; // port race with another process on this machine: retry
            }
            break;
        }
        throw new IllegalStateException(kind + " server (" + binary + ") did not log '" + READY_LINE
            + "' within " + READY_TIMEOUT.toSeconds() + " s; log " + log + " ends with:\n" + last);
    }

    private String readLogFrom(long offset) {
        try {
            byte[] all = Files.readAllBytes(log);
            int from = (int) Math.min(offset, all.length);
            return new String(all, from, all.length - from, StandardCharsets.UTF_8);
        } catch (IOException e) {
            return "";
        }
    }

    /** The last {@code max} characters of the server's log (for failure messages). */
    public String logTail(int max) {
        return tail(readLogFrom(0), max);
    }

    private static String tail(String s, int max) {
        return s.length() <= max ? s : s.substring(s.length() - max);
    }

    private static int freePort(int other) {
        ThreadLocalRandom rnd = ThreadLocalRandom.current();
        for (int i = 0; i < 200; i++) {
            int port = rnd.nextInt(PORT_MIN, PORT_MAX + 1);
            if (port == other) {
                continue;
            }
            try (ServerSocket s = new ServerSocket(port, 1, InetAddress.getByName("127.0.0.1"))) {
                s.setReuseAddress(true);
                return port;
            } catch (IOException busy) {
                // taken: try another
            }
        }
        throw new IllegalStateException("no free 127.0.0.1 port in " + PORT_MIN + "-" + PORT_MAX);
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        }
    }

    private void stopProcess() {
        Process p = process;
        if (p == null) {
            return;
        }
        if (p.isAlive()) {
            p.destroy(); // SIGTERM
            try {
                if (!p.waitFor(10, TimeUnit.SECONDS)) {
                    p.destroyForcibly();
                    p.waitFor(10, TimeUnit.SECONDS);
                }
            } catch (InterruptedException e) {
                p.destroyForcibly();
                Thread.currentThread().interrupt();
            }
        }
        process = null;
    }

    @Override
    public synchronized void close() {
        closeClients();
        stopProcess();
    }

    @Override
    public String toString() {
        return kind + "@" + clientUrl();
    }
}
