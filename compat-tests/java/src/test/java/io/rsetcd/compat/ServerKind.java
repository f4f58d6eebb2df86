package io.rsetcd.compat;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * The two servers every test runs against: the reference etcd and rsetcd, the server under
 * test. Binaries come from a system property, then an environment variable, then the default
 * path in the repository (the same variables as the other compat suites).
 */
public enum ServerKind {
    /** Reference etcd 3.6 built by scripts/build-reference.sh. */
    ETCD("etcd", "ref.etcd.bin", "REF_ETCD_BIN", ".cache/reference/bin/etcd",
        "REF_ETCD_BIN; run scripts/build-reference.sh"),
    /** The server under test. */
    RSETCD("rsetcd", "rsetcd.bin", "RSETCD_BIN", "target/debug/rsetcd",
        "RSETCD_BIN; run cargo build");

    private final String label;
    private final String property;
    private final String envVar;
    private final String defaultPath;
    private final String hint;

    ServerKind(String label, String property, String envVar, String defaultPath, String hint) {
        this.label = label;
        this.property = property;
        this.envVar = envVar;
        this.defaultPath = defaultPath;
        this.hint = hint;
    }

    public String label() {
        return label;
    }

    /** The binary to start, as configured (not checked). */
    public Path binary() {
        String p = System.getProperty(property);
        if (p == null || p.isBlank()) {
            p = System.getenv(envVar);
        }
        if (p == null || p.isBlank()) {
            return repoRoot().resolve(defaultPath);
        }
        return Path.of(p).toAbsolutePath();
    }

    /** Fails with a hint when the binary is missing. */
    public Path checkedBinary() {
        Path b = binary();
        if (!Files.isExecutable(b)) {
            throw new IllegalStateException("missing " + label + " binary (set " + hint + "): " + b);
        }
        return b;
    }

    /** The repository root: set by the pom (repo.root), else two levels above the working dir. */
    public static Path repoRoot() {
        String r = System.getProperty("repo.root");
        Path p = (r == null || r.isBlank()) ? Path.of("../..") : Path.of(r);
        return p.toAbsolutePath().normalize();
    }

    @Override
    public String toString() {
        return label;
    }
}
