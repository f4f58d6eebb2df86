package io.rsetcd.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import io.etcd.jetcd.Client;
import io.etcd.jetcd.ByteSequence;
import io.etcd.jetcd.common.exception.EtcdException;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.extension.ExtendWith;

/** Base of the test classes: helpers, closing each test's clients after it, and {@link ResultLog}. */
@ExtendWith(ResultLog.class)
public abstract class CompatTest {
    /** Bound on every unary call and on each wait for an event. */
    public static final long TIMEOUT_SECONDS = 10;

    @AfterEach
    void closeClients() {
        Servers.closeSharedClients();
    }

    /** A client of the shared server of this kind. */
    protected static Client client(ServerKind kind) {
        return Servers.shared(kind).client();
    }

    protected static ByteSequence bs(String s) {
        return Bytes.bs(s);
    }

    protected static String str(ByteSequence b) {
        return Bytes.str(b);
    }

    /** The future's result, failing the test after {@link #TIMEOUT_SECONDS}. */
    protected static <T> T await(CompletableFuture<T> f) {
        try {
            return f.get(TIMEOUT_SECONDS, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted", e);
        } catch (ExecutionException e) {
            throw new AssertionError("call failed: " + e.getCause(), e.getCause());
        } catch (TimeoutException e) {
            throw new AssertionError("no answer within " + TIMEOUT_SECONDS + " s", e);
        }
    }

    /** The exception the future fails with (failing the test if it succeeds or hangs). */
    protected static Throwable failure(CompletableFuture<?> f) {
        try {
            Object r = f.get(TIMEOUT_SECONDS, TimeUnit.SECONDS);
            return fail("expected the call to fail, it succeeded (" + (r == null ? "null" : r.getClass().getSimpleName()) + ")");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted", e);
        } catch (ExecutionException e) {
            Throwable c = e.getCause();
            while (c instanceof java.util.concurrent.CompletionException && c.getCause() != null) {
                c = c.getCause();
            }
            return c;
        } catch (TimeoutException e) {
            throw new AssertionError("no answer within " + TIMEOUT_SECONDS + " s", e);
        }
    }

    /**
     * A gRPC error as the client reports it. jetcd hands some failures over as its
     * EtcdException and others (calls that go through its retry policy) as grpc-java's
     * StatusRuntimeException: both carry the server's status code and message.
     */
    public record RpcError(Status.Code code, String message, Throwable raw) {
        @Override
        public String toString() {
            return code + ": " + message;
        }
    }

    /** The gRPC status the future fails with (failing the test if it fails otherwise). */
    protected static RpcError rpcError(CompletableFuture<?> f) {
        Throwable t = failure(f);
        if (t instanceof EtcdException e) {
            return new RpcError(Status.Code.valueOf(e.getErrorCode().name()), e.getMessage(), t);
        }
        if (t instanceof StatusRuntimeException e) {
            return new RpcError(e.getStatus().getCode(), e.getStatus().getDescription(), t);
        }
        return fail("expected a gRPC error, got " + t, t);
    }

    /** Asserts that the future fails with this gRPC code and message. */
    protected static void assertRpcError(CompletableFuture<?> f, Status.Code code, String message) {
        RpcError e = rpcError(f);
        assertEquals(code + ": " + message, e.toString(), "gRPC error");
    }

    /** True when the future has not completed after {@code ms} milliseconds. */
    protected static boolean stillPending(CompletableFuture<?> f, long ms) {
        try {
            f.get(ms, TimeUnit.MILLISECONDS);
            return false;
        } catch (TimeoutException e) {
            return true;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted", e);
        } catch (ExecutionException e) {
            return false;
        }
    }
}
