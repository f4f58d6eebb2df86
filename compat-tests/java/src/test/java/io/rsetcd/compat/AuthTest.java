package io.rsetcd.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.etcd.jetcd.Auth;
import io.etcd.jetcd.Client;
import io.etcd.jetcd.KV;
import io.etcd.jetcd.auth.AuthRoleGetResponse;
import io.etcd.jetcd.auth.Permission;
import io.grpc.Status;
import java.util.List;

/**
 * Auth: users, roles, permissions, and what enabling auth does to clients.
 *
 * <p>Each test starts a fresh server: enabling auth changes the whole server.
 */
class AuthTest extends CompatTest {
    private static final String ROOT_PW = "root-pw";
    private static final String ALICE_PW = "alice-pw";

    /** All messages along the cause chain (jetcd wraps authentication failures). */
    private static String messages(Throwable t) {
        StringBuilder sb = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            sb.append(c.getClass().getSimpleName()).append(": ").append(c.getMessage()).append(" / ");
        }
        return sb.toString();
    }

    /** Creates root (role root) and alice (role reader: read on the prefix /auth/). */
    private static void createUsers(Auth auth) {
        await(auth.roleAdd(bs("root")));
        await(auth.userAdd(bs("root"), bs(ROOT_PW)));
        await(auth.userGrantRole(bs("root"), bs("root")));
        await(auth.roleAdd(bs("reader")));
        await(auth.roleGrantPermission(bs("reader"), bs("/auth/"), bs("/auth0"), Permission.Type.READ));
        await(auth.userAdd(bs("alice"), bs(ALICE_PW)));
        await(auth.userGrantRole(bs("alice"), bs("reader")));
    }

    @BothServers
    void usersRolesAndPermissions(ServerKind kind) {
        try (EtcdServer server = Servers.fresh(kind)) {
            Auth auth = server.client().getAuthClient();

            createUsers(auth);
            assertEquals(List.of("alice", "root"), await(auth.userList()).getUsers());
            assertEquals(List.of("reader", "root"), await(auth.roleList()).getRoles());
            assertEquals(List.of("reader"), await(auth.userGet(bs("alice"))).getRoles());

            AuthRoleGetResponse reader = await(auth.roleGet(bs("reader")));
            assertEquals(1, reader.getPermissions().size());
            Permission perm = reader.getPermissions().get(0);
            assertEquals(Permission.Type.READ, perm.getPermType());
            assertEquals("/auth/", str(perm.getKey()));
            assertEquals("/auth0", str(perm.getRangeEnd()));

            assertRpcError(auth.userAdd(bs("alice"), bs("x")), Status.Code.FAILED_PRECONDITION,
                "etcdserver: user name already exists");
            assertRpcError(auth.userGet(bs("bob")), Status.Code.FAILED_PRECONDITION,
                "etcdserver: user name not found");
            assertRpcError(auth.userGrantRole(bs("alice"), bs("writer")), Status.Code.FAILED_PRECONDITION,
                "etcdserver: role name not found");

            await(auth.roleRevokePermission(bs("reader"), bs("/auth/"), bs("/auth0")));
            assertEquals(List.of(), await(auth.roleGet(bs("reader"))).getPermissions());
            await(auth.userRevokeRole(bs("alice"), bs("reader")));
            assertEquals(List.of(), await(auth.userGet(bs("alice"))).getRoles());
            await(auth.userDelete(bs("alice")));
            await(auth.roleDelete(bs("reader")));
            assertEquals(List.of("root"), await(auth.userList()).getUsers());
            assertEquals(List.of("root"), await(auth.roleList()).getRoles());
        }
    }

    @BothServers
    void enablingAuthRequiresCredentialsAndChecksPermissions(ServerKind kind) {
        try (EtcdServer server = Servers.fresh(kind)) {
            Client anonymous = server.client();
            Auth auth = anonymous.getAuthClient();

            assertRpcError(auth.authEnable(), Status.Code.FAILED_PRECONDITION, "etcdserver: root user does not exist");
            createUsers(auth);
            await(anonymous.getKVClient().put(bs("/auth/k"), bs("before")));
            await(auth.authEnable());

            assertRpcError(anonymous.getKVClient().put(bs("/auth/k"), bs("anon")), Status.Code.INVALID_ARGUMENT,
                "etcdserver: user name is empty");

            KV root = server.client("root", ROOT_PW).getKVClient();
            await(root.put(bs("/auth/k"), bs("by-root")));
            await(root.put(bs("/other"), bs("by-root")));

            KV alice = server.client("alice", ALICE_PW).getKVClient();
            assertEquals("by-root", str(await(alice.get(bs("/auth/k"))).getKvs().get(0).getValue()));
            assertRpcError(alice.put(bs("/auth/k"), bs("by-alice")), Status.Code.PERMISSION_DENIED,
                "etcdserver: permission denied");
            assertRpcError(alice.get(bs("/other")), Status.Code.PERMISSION_DENIED, "etcdserver: permission denied");

            // jetcd authenticates before the call and reports a refused password as
            // UNAUTHENTICATED, with etcd's answer as the cause
            RpcError wrong = rpcError(server.client("alice", "wrong").getKVClient().get(bs("/auth/k")));
            assertEquals(Status.Code.UNAUTHENTICATED, wrong.code(), () -> messages(wrong.raw()));
            assertTrue(messages(wrong.raw()).contains("etcdserver: authentication failed, invalid user ID or password"),
                () -> "a wrong password: " + messages(wrong.raw()));

            await(server.client("root", ROOT_PW).getAuthClient().authDisable());
            await(anonymous.getKVClient().put(bs("/auth/k"), bs("anon-again")));
            assertEquals("anon-again", str(await(alice.get(bs("/auth/k"))).getKvs().get(0).getValue()));
        }
    }
}
