package io.rsetcd.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.etcd.jetcd.ByteSequence;
import io.etcd.jetcd.Client;
import io.etcd.jetcd.Election;
import io.etcd.jetcd.election.CampaignResponse;
import io.etcd.jetcd.election.LeaderKey;
import io.etcd.jetcd.election.LeaderResponse;
import io.etcd.jetcd.election.NoLeaderException;
import io.etcd.jetcd.election.NotLeaderException;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/** Election (v3election service): campaign, leader, observe, proclaim, resign. */
class ElectionTest extends CompatTest {
    private static final String P = "/java/election/";

    /** Observer that queues the leader values it is told about. */
    private static final class Observer implements Election.Listener {
        final BlockingQueue<String> values = new LinkedBlockingQueue<>();
        final BlockingQueue<Throwable> errors = new LinkedBlockingQueue<>();

        @Override
        public void onNext(LeaderResponse r) {
            values.add(str(r.getKv().getValue()));
        }

        @Override
        public void onError(Throwable t) {
            errors.add(t);
        }

        @Override
        public void onCompleted() {
        }

        String next() throws InterruptedException {
            String v = values.poll(TIMEOUT_SECONDS, TimeUnit.SECONDS);
            if (v == null) {
                throw new AssertionError("observer saw no new leader value; errors: " + errors);
            }
            return v;
        }
    }

    @BothServers
    void campaignLeaderObserveProclaimResign(ServerKind kind) throws InterruptedException {
        Client a = Servers.shared(kind).client();
        Client b = Servers.shared(kind).client();
        Client watcher = Servers.shared(kind).client();
        ByteSequence name = bs(P + "main");
        long leaseA = await(a.getLeaseClient().grant(30)).getID();
        long leaseB = await(b.getLeaseClient().grant(30)).getID();

        CampaignResponse won = await(a.getElectionClient().campaign(name, leaseA, bs("alice")));
        LeaderKey lk = won.getLeader();
        assertEquals(str(name), str(lk.getName()));
        assertEquals(str(name) + "/" + Long.toHexString(leaseA), str(lk.getKey()));
        assertEquals(leaseA, lk.getLease());
        assertTrue(lk.getRevision() > 0);

        LeaderResponse leader = await(watcher.getElectionClient().leader(name));
        assertEquals("alice", str(leader.getKv().getValue()));
        assertEquals(str(lk.getKey()), str(leader.getKv().getKey()));
        assertEquals(lk.getRevision(), leader.getKv().getCreateRevision());

        Observer obs = new Observer();
        watcher.getElectionClient().observe(name, obs);
        assertEquals("alice", obs.next(), "observe starts with the current leader");

        CompletableFuture<CampaignResponse> bobCampaign = b.getElectionClient().campaign(name, leaseB, bs("bob"));
        assertTrue(stillPending(bobCampaign, 700), "a second candidate waits while there is a leader");

        await(a.getElectionClient().proclaim(lk, bs("alice-2")));
        assertEquals("alice-2", obs.next(), "observe sees a proclaimed value");
        assertEquals("alice-2", str(await(watcher.getElectionClient().leader(name)).getKv().getValue()));

        await(a.getElectionClient().resign(lk));
        CampaignResponse bobWon = await(bobCampaign);
        assertEquals(str(name) + "/" + Long.toHexString(leaseB), str(bobWon.getLeader().getKey()));
        assertEquals("bob", obs.next(), "observe sees the next leader after a resign");
        assertEquals("bob", str(await(watcher.getElectionClient().leader(name)).getKv().getValue()));

        // the old leader key no longer leads
        Throwable notLeader = failure(a.getElectionClient().proclaim(lk, bs("late")));
        assertInstanceOf(NotLeaderException.class, notLeader);

        await(b.getElectionClient().resign(bobWon.getLeader()));
        Throwable none = failure(watcher.getElectionClient().leader(name));
        assertInstanceOf(NoLeaderException.class, none, "no leader after the last resign");
        assertTrue(obs.errors.isEmpty(), "observer errors: " + obs.errors);

        await(a.getLeaseClient().revoke(leaseA));
        await(b.getLeaseClient().revoke(leaseB));
    }

    @BothServers
    void leaderOfEmptyElection(ServerKind kind) {
        Throwable t = failure(client(kind).getElectionClient().leader(bs(P + "nobody")));
        assertInstanceOf(NoLeaderException.class, t);
    }
}
