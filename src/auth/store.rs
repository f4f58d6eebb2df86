//! Users, roles and permissions: the replicated auth state (stored in `meta`, changed only
//! by applied raft entries) with an in-memory copy for the permission checks every request
//! makes, and the checks themselves, with etcd's rules and errors.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use base64::Engine;
use heed::RwTxn;
use prost::Message;

use super::error::{Error, Result};
use super::perms::{is_valid_permission_range, UserPerms};
use super::tokens::Tokens;
use super::AuthInfo;
use crate::backend::{meta_key, Backend};
use crate::pb::authpb::{permission, Permission, Role, User, UserAddOptions};
use crate::pb::etcdserverpb as pb;
use crate::pb::rsetcdpb::auth_request::Request;
use crate::pb::rsetcdpb::{AuthState, Authenticate};

pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";

/// What an applied auth request answers (headers are added by the server).
#[derive(Debug)]
pub enum Reply {
    Enable(pb::AuthEnableResponse),
    Disable(pb::AuthDisableResponse),
    Status(pb::AuthStatusResponse),
    Authenticate(pb::AuthenticateResponse),
    UserAdd(pb::AuthUserAddResponse),
    UserDelete(pb::AuthUserDeleteResponse),
    UserChangePassword(pb::AuthUserChangePasswordResponse),
    UserGrantRole(pb::AuthUserGrantRoleResponse),
    UserGet(pb::AuthUserGetResponse),
    UserList(pb::AuthUserListResponse),
    UserRevokeRole(pb::AuthUserRevokeRoleResponse),
    RoleAdd(pb::AuthRoleAddResponse),
    RoleGrantPermission(pb::AuthRoleGrantPermissionResponse),
    RoleGet(pb::AuthRoleGetResponse),
    RoleList(pb::AuthRoleListResponse),
    RoleRevokePermission(pb::AuthRoleRevokePermissionResponse),
    RoleDelete(pb::AuthRoleDeleteResponse),
}

/// Why applying an auth request failed: the request's fault, or the disk's.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Auth(#[from] Error),
    #[error("storage: {0}")]
    Storage(#[from] heed::Error),
}

#[derive(Default)]
struct State {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Every user's merged permissions, rebuilt after each change.
    perms: HashMap<String, UserPerms>,
}

impl State {
    fn decode(stored: Option<&[u8]>) -> State {
        let stored = stored.map(|b| AuthState::decode(b).expect("corrupt stored auth state"));
        let stored = stored.unwrap_or_default();
        let name = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let mut state = State {
            enabled: stored.enabled,
            // etcd's auth store starts at revision 1.
            revision: stored.revision.max(1),
            users: stored.users.into_iter().map(|u| (name(&u.name), u)).collect(),
            roles: stored.roles.into_iter().map(|r| (name(&r.name), r)).collect(),
            perms: HashMap::new(),
        };
        state.refresh_perms();
        state
    }

    fn encode(&self) -> Vec<u8> {
        AuthState {
            enabled: self.enabled,
            revision: self.revision,
            users: self.users.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
        }
        .encode_to_vec()
    }

    fn refresh_perms(&mut self) {
        let roles = &self.roles;
        self.perms = self
            .users
            .iter()
            .map(|(name, user)| {
                (name.clone(), UserPerms::merge(user.roles.iter().filter_map(|r| roles.get(r))))
            })
            .collect();
    }

    fn is_admin(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(has_root_role)
    }
}

fn has_root_role(user: &User) -> bool {
    user.roles.iter().any(|r| r == ROOT_ROLE)
}

pub struct AuthStore {
    state: RwLock<State>,
    tokens: Tokens,
    bcrypt_cost: u32,
}

impl AuthStore {
    pub fn open(backend: &Backend, tokens: Tokens, bcrypt_cost: u32) -> heed::Result<Self> {
        let store = Self { state: RwLock::new(State::default()), tokens, bcrypt_cost };
        store.reload(backend)?;
        Ok(store)
    }

    /// Reads the stored state again (at start-up, and after a store copy was installed).
    pub fn reload(&self, backend: &Backend) -> heed::Result<()> {
        let txn = backend.read_txn()?;
        let state = State::decode(backend.meta().get(&txn, meta_key::AUTH)?);
        *self.write() = state;
        if let Tokens::Simple(simple) = &self.tokens {
            simple.forget_all();
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_enabled(&self) -> bool {
        self.read().enabled
    }

    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    /// Forgets expired simple tokens.
    pub fn sweep_tokens(&self) {
        if let Tokens::Simple(simple) = &self.tokens {
            simple.sweep();
        }
    }

    /// The raft index a simple token was issued at (a member answers for it only once it
    /// applied that index); `None` for JWTs, which need no member state.
    pub fn token_index(&self, token: &str) -> Result<Option<u64>> {
        match &self.tokens {
            Tokens::Simple(_) => {
                let index = super::tokens::SimpleTokens::index_of(token);
                Ok(Some(index.ok_or(Error::InvalidAuthToken)?))
            }
            Tokens::Jwt(_) => Ok(None),
        }
    }

    /// Who a token belongs to: a simple token is checked at the current auth revision, a
    /// JWT at the revision it was issued at.
    pub fn user_of_token(&self, token: &str) -> Result<AuthInfo> {
        match &self.tokens {
            Tokens::Simple(simple) => {
                let username = simple.user_of(token).ok_or(Error::InvalidAuthToken)?;
                Ok(AuthInfo { username, revision: self.revision() })
            }
            Tokens::Jwt(jwt) => {
                let (username, revision) = jwt.verify(token).ok_or(Error::InvalidAuthToken)?;
                Ok(AuthInfo { username, revision })
            }
        }
    }

    /// etcd's `isOpPermitted`: with auth on, the caller must be known, its credentials
    /// current, and the range granted (root may do anything).
    fn check_op(&self, caller: &AuthInfo, key: &[u8], range_end: &[u8], write: bool) -> Result<()> {
        let state = self.read();
        if !state.enabled {
            return Ok(());
        }
        if caller.revision == 0 {
            return Err(Error::UserEmpty);
        }
        if caller.revision < state.revision {
            return Err(Error::AuthOldRevision);
        }
        let Some(user) = state.users.get(&caller.username) else {
            return Err(Error::PermissionDenied);
        };
        if has_root_role(user) {
            return Ok(());
        }
        let Some(perms) = state.perms.get(&caller.username) else {
            return Err(Error::PermissionDenied);
        };
        let spans = if write { &perms.write } else { &perms.read };
        if spans.permits(key, range_end) {
            Ok(())
        } else {
            Err(Error::PermissionDenied)
        }
    }

    pub fn check_read(&self, caller: &AuthInfo, key: &[u8], range_end: &[u8]) -> Result<()> {
        self.check_op(caller, key, range_end, false)
    }

    pub fn check_write(&self, caller: &AuthInfo, key: &[u8], range_end: &[u8]) -> Result<()> {
        self.check_op(caller, key, range_end, true)
    }

    /// etcd's `IsAdminPermitted`: with auth on, only a user holding the root role.
    pub fn check_admin(&self, caller: Option<&AuthInfo>) -> Result<()> {
        let state = self.read();
        if !state.enabled {
            return Ok(());
        }
        let caller = caller.filter(|c| !c.username.is_empty()).ok_or(Error::UserEmpty)?;
        let user = state.users.get(&caller.username).ok_or(Error::UserNotFound)?;
        if has_root_role(user) {
            Ok(())
        } else {
            Err(Error::PermissionDenied)
        }
    }

    /// What etcd asks of a lease or Status request: any authenticated caller.
    pub fn require_caller(&self, caller: Option<&AuthInfo>) -> Result<()> {
        if self.is_enabled() && caller.is_none() {
            return Err(Error::UserEmpty);
        }
        Ok(())
    }

    /// Checks a password; answers the auth revision it was checked at. The bcrypt
    /// comparison (slow on purpose) runs without holding the state.
    pub fn check_password(&self, name: &str, password: &str) -> Result<u64> {
        let (hash, revision) = {
            let state = self.read();
            if !state.enabled {
                return Err(Error::AuthNotEnabled);
            }
            let user = state.users.get(name).ok_or(Error::AuthFailed)?;
            if user.options.as_ref().is_some_and(|o| o.no_password) {
                return Err(Error::NoPasswordUser);
            }
            (user.password.clone(), state.revision)
        };
        let hash = String::from_utf8(hash).map_err(|_| Error::AuthFailed)?;
        match bcrypt::verify(password, &hash) {
            Ok(true) => Ok(revision),
            _ => Err(Error::AuthFailed),
        }
    }

    /// The bcrypt hash of a new password, base64-encoded as etcd's `hashedPassword`.
    pub fn hash_password(
        &self,
        password: &str,
    ) -> std::result::Result<String, bcrypt::BcryptError> {
        let hash = bcrypt::hash(password, self.bcrypt_cost)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(hash))
    }

    /// Applies one auth request inside the raft thread's transaction. `caller` is who
    /// proposed it; `index` is the entry's raft index (it completes simple tokens).
    pub fn apply(
        &self,
        backend: &Backend,
        txn: &mut RwTxn,
        index: u64,
        caller: &AuthInfo,
        request: Request,
    ) -> std::result::Result<Reply, ApplyError> {
        if needs_admin(&request) {
            self.check_admin(Some(caller))?;
        }
        let mut state = self.write();
        let before = state.revision;
        let reply = apply_to(&mut state, &self.tokens, index, caller, request)?;
        if state.revision != before || matches!(reply, Reply::Enable(_) | Reply::Disable(_)) {
            state.refresh_perms();
            backend.meta().put(txn, meta_key::AUTH, &state.encode())?;
        }
        Ok(reply)
    }

    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.read().users.get(user).is_some_and(|u| u.roles.iter().any(|r| r == role))
    }
}

/// The auth requests only root may make when auth is on (etcd's `needAdminPermission`).
fn needs_admin(request: &Request) -> bool {
    !matches!(request, Request::Authenticate(_) | Request::UserGet(_) | Request::RoleGet(_))
}

fn apply_to(
    state: &mut State,
    tokens: &Tokens,
    index: u64,
    caller: &AuthInfo,
    request: Request,
) -> Result<Reply> {
    let bump = |state: &mut State| state.revision += 1;
    Ok(match request {
        Request::Enable(_) => {
            if !state.enabled {
                let root = state.users.get(ROOT_USER).ok_or(Error::RootUserNotExist)?;
                if !has_root_role(root) {
                    return Err(Error::RootRoleNotExist);
                }
                state.enabled = true;
            }
            Reply::Enable(Default::default())
        }
        Request::Disable(_) => {
            if state.enabled {
                state.enabled = false;
                bump(state);
                if let Tokens::Simple(simple) = tokens {
                    simple.forget_all();
                }
            }
            Reply::Disable(Default::default())
        }
        Request::Status(_) => Reply::Status(pb::AuthStatusResponse {
            header: None,
            enabled: state.enabled,
            auth_revision: state.revision,
        }),
        Request::Authenticate(Authenticate { name, simple_token }) => {
            if !state.enabled {
                return Err(Error::AuthNotEnabled);
            }
            let user = state.users.get(&name).ok_or(Error::AuthFailed)?;
            if user.options.as_ref().is_some_and(|o| o.no_password) {
                return Err(Error::AuthFailed);
            }
            let token = match tokens {
                Tokens::Simple(simple) => {
                    let token = format!("{simple_token}.{index}");
                    simple.assign(token.clone(), &name);
                    token
                }
                Tokens::Jwt(jwt) => jwt
                    .sign(&name, state.revision)
                    .map_err(|err| Error::TokenSigning(err.to_string()))?,
            };
            Reply::Authenticate(pb::AuthenticateResponse { header: None, token })
        }
        Request::UserAdd(req) => {
            if req.name.is_empty() {
                return Err(Error::UserEmpty);
            }
            if state.users.contains_key(&req.name) {
                return Err(Error::UserAlreadyExist);
            }
            let options = req.options.unwrap_or(UserAddOptions { no_password: false });
            let password = if options.no_password {
                Vec::new()
            } else {
                stored_password(&req.hashed_password)?
            };
            let user = User {
                name: req.name.clone().into_bytes(),
                password,
                roles: Vec::new(),
                options: Some(options),
            };
            state.users.insert(req.name, user);
            bump(state);
            Reply::UserAdd(Default::default())
        }
        Request::UserDelete(req) => {
            if state.enabled && req.name == ROOT_USER {
                return Err(Error::InvalidAuthMgmt);
            }
            state.users.remove(&req.name).ok_or(Error::UserNotFound)?;
            bump(state);
            if let Tokens::Simple(simple) = tokens {
                simple.forget_user(&req.name);
            }
            Reply::UserDelete(Default::default())
        }
        Request::UserChangePassword(req) => {
            let user = state.users.get_mut(&req.name).ok_or(Error::UserNotFound)?;
            let no_password = user.options.as_ref().is_some_and(|o| o.no_password);
            user.password =
                if no_password { Vec::new() } else { stored_password(&req.hashed_password)? };
            bump(state);
            if let Tokens::Simple(simple) = tokens {
                simple.forget_user(&req.name);
            }
            Reply::UserChangePassword(Default::default())
        }
        Request::UserGrantRole(req) => {
            if !state.users.contains_key(&req.user) {
                return Err(Error::UserNotFound);
            }
            if req.role != ROOT_ROLE && !state.roles.contains_key(&req.role) {
                return Err(Error::RoleNotFound);
            }
            let user = state.users.get_mut(&req.user).expect("checked above");
            if let Err(at) = user.roles.binary_search(&req.role) {
                user.roles.insert(at, req.role);
                bump(state);
            }
            Reply::UserGrantRole(Default::default())
        }
        Request::UserGet(req) => {
            if state.enabled && !state.is_admin(&caller.username) && req.name != caller.username {
                return Err(admin_error(state, caller));
            }
            let user = state.users.get(&req.name).ok_or(Error::UserNotFound)?;
            Reply::UserGet(pb::AuthUserGetResponse { header: None, roles: user.roles.clone() })
        }
        Request::UserList(_) => Reply::UserList(pb::AuthUserListResponse {
            header: None,
            users: state.users.keys().cloned().collect(),
        }),
        Request::UserRevokeRole(req) => {
            if state.enabled && req.name == ROOT_USER && req.role == ROOT_ROLE {
                return Err(Error::InvalidAuthMgmt);
            }
            let user = state.users.get_mut(&req.name).ok_or(Error::UserNotFound)?;
            let before = user.roles.len();
            user.roles.retain(|r| *r != req.role);
            if user.roles.len() == before {
                return Err(Error::RoleNotGranted);
            }
            bump(state);
            Reply::UserRevokeRole(Default::default())
        }
        Request::RoleAdd(req) => {
            if req.name.is_empty() {
                return Err(Error::RoleEmpty);
            }
            if state.roles.contains_key(&req.name) {
                return Err(Error::RoleAlreadyExist);
            }
            let role = Role { name: req.name.clone().into_bytes(), key_permission: Vec::new() };
            state.roles.insert(req.name, role);
            bump(state);
            Reply::RoleAdd(Default::default())
        }
        Request::RoleGrantPermission(req) => {
            let perm = req.perm.ok_or(Error::PermissionNotGiven)?;
            if !is_valid_permission_range(&perm.key, &perm.range_end) {
                return Err(Error::InvalidAuthMgmt);
            }
            let role = state.roles.get_mut(&req.name).ok_or(Error::RoleNotFound)?;
            let existing = role
                .key_permission
                .iter_mut()
                .find(|p| p.key == perm.key && p.range_end == perm.range_end);
            match existing {
                Some(existing) => existing.perm_type = perm.perm_type,
                None => {
                    role.key_permission.push(perm);
                    role.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
                }
            }
            bump(state);
            Reply::RoleGrantPermission(Default::default())
        }
        Request::RoleGet(req) => {
            if state.enabled && !state.is_admin(&caller.username) {
                let holds =
                    state.users.get(&caller.username).is_some_and(|u| u.roles.contains(&req.role));
                if !holds {
                    return Err(admin_error(state, caller));
                }
            }
            let role = state.roles.get(&req.role).ok_or(Error::RoleNotFound)?;
            let perm = if req.role == ROOT_ROLE {
                vec![Permission {
                    perm_type: permission::Type::Readwrite as i32,
                    key: Vec::new(),
                    range_end: vec![0],
                }]
            } else {
                role.key_permission.clone()
            };
            Reply::RoleGet(pb::AuthRoleGetResponse { header: None, perm })
        }
        Request::RoleList(_) => Reply::RoleList(pb::AuthRoleListResponse {
            header: None,
            roles: state.roles.keys().cloned().collect(),
        }),
        Request::RoleRevokePermission(req) => {
            let role = state.roles.get_mut(&req.role).ok_or(Error::RoleNotFound)?;
            let before = role.key_permission.len();
            role.key_permission.retain(|p| p.key != req.key || p.range_end != req.range_end);
            if role.key_permission.len() == before {
                return Err(Error::PermissionNotGranted);
            }
            bump(state);
            Reply::RoleRevokePermission(Default::default())
        }
        Request::RoleDelete(req) => {
            if state.enabled && req.role == ROOT_ROLE {
                return Err(Error::InvalidAuthMgmt);
            }
            state.roles.remove(&req.role).ok_or(Error::RoleNotFound)?;
            for user in state.users.values_mut() {
                user.roles.retain(|r| *r != req.role);
            }
            bump(state);
            Reply::RoleDelete(Default::default())
        }
    })
}

/// The error etcd's admin check gives a caller that is not root.
fn admin_error(state: &State, caller: &AuthInfo) -> Error {
    if caller.username.is_empty() {
        Error::UserEmpty
    } else if !state.users.contains_key(&caller.username) {
        Error::UserNotFound
    } else {
        Error::PermissionDenied
    }
}

/// The bcrypt hash a proposal carries base64-encoded. etcd answers a bad encoding as
/// "password was given for no password user", mapped to a failed authentication.
fn stored_password(hashed: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(hashed).map_err(|_| Error::AuthFailed)
}
