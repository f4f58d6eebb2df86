package io.rsetcd.compat;

import io.etcd.jetcd.Watch;
import io.etcd.jetcd.watch.WatchEvent;
import io.etcd.jetcd.watch.WatchResponse;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/** A watch listener that queues what it is given, for tests to take in order. */
public final class WatchCollector implements Watch.Listener {
    private final BlockingQueue<WatchResponse> responses = new LinkedBlockingQueue<>();
    private final BlockingQueue<WatchEvent> events = new LinkedBlockingQueue<>();
    private final BlockingQueue<Throwable> errors = new LinkedBlockingQueue<>();
    private final CountDownLatch completed = new CountDownLatch(1);

    @Override
    public void onNext(WatchResponse response) {
        responses.add(response);
        events.addAll(response.getEvents());
    }

    @Override
    public void onError(Throwable throwable) {
        errors.add(throwable);
    }

    @Override
    public void onCompleted() {
        completed.countDown();
    }

    /** The next response (also created notifications), failing after the timeout. */
    public WatchResponse nextResponse() {
        return take(responses, "watch response");
    }

    /** The next event, failing after the timeout or on a watch error. */
    public WatchEvent nextEvent() {
        return take(events, "watch event");
    }

    /** The next {@code n} events. */
    public List<WatchEvent> nextEvents(int n) {
        List<WatchEvent> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            out.add(nextEvent());
        }
        return out;
    }

    /** Events received within {@code ms} milliseconds from now (none expected, usually). */
    public List<WatchEvent> eventsWithin(long ms) throws InterruptedException {
        Thread.sleep(ms);
        List<WatchEvent> out = new ArrayList<>();
        events.drainTo(out);
        return out;
    }

    public List<Throwable> errors() {
        return new ArrayList<>(errors);
    }

    public boolean isCompleted() {
        return completed.getCount() == 0;
    }

    private <T> T take(BlockingQueue<T> q, String what) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(CompatTest.TIMEOUT_SECONDS);
        try {
            while (System.nanoTime() < deadline) {
                T t = q.poll(50, TimeUnit.MILLISECONDS);
                if (t != null) {
                    return t;
                }
                if (!errors.isEmpty()) {
                    throw new AssertionError("watch failed while waiting for a " + what + ": " + errors.peek(),
                        errors.peek());
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted", e);
        }
        throw new AssertionError("no " + what + " within " + CompatTest.TIMEOUT_SECONDS + " s");
    }
}
