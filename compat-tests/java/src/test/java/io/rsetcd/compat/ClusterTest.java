package io.rsetcd.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import io.etcd.jetcd.cluster.Member;
import io.etcd.jetcd.cluster.MemberListResponse;
import java.net.URI;
import java.util.List;

/** Cluster: the member list of a single-member server. */
class ClusterTest extends CompatTest {

    @BothServers
    void listMemberShowsTheOneMember(ServerKind kind) {
        EtcdServer server = Servers.shared(kind);
        MemberListResponse r = await(server.client().getClusterClient().listMember());
        List<Member> members = r.getMembers();
        assertEquals(1, members.size(), "members: " + members);
        Member m = members.get(0);
        assertEquals(EtcdServer.MEMBER_NAME, m.getName());
        assertEquals(List.of(URI.create(server.peerUrl())), m.getPeerURIs());
        assertEquals(List.of(URI.create(server.clientUrl())), m.getClientURIs());
        assertFalse(m.isLearner());
        assertNotEquals(0, m.getId());
        assertEquals(r.getHeader().getMemberId(), m.getId(), "the header names this member");
        assertNotEquals(0, r.getHeader().getClusterId());
    }
}
