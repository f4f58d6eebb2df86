package io.rsetcd.compat;

import io.etcd.jetcd.ByteSequence;
import java.nio.charset.StandardCharsets;

/** UTF-8 conversions between strings and jetcd's ByteSequence. */
public final class Bytes {
    private Bytes() {
    }

    public static ByteSequence bs(String s) {
        return ByteSequence.from(s, StandardCharsets.UTF_8);
    }

    public static String str(ByteSequence b) {
        return b.toString(StandardCharsets.UTF_8);
    }
}
