//! etcd's simple tokens: `<16 random letters>.<raft index>`, registered on every member when
//! the Authenticate entry at that index is applied, and forgotten after `--auth-token-ttl`
//! without use (each use restarts the clock), when the user is deleted or changes password,
//! and when auth is disabled. They live in memory only, so a restart forgets them, as etcd.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

/// How this member issues and checks tokens (`--auth-token`).
pub enum Tokens {
    Simple(SimpleTokens),
    Jwt(super::jwt::JwtTokens),
}

const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const PREFIX_LEN: usize = 16;

struct Entry {
    user: String,
    expires: Instant,
}

pub struct SimpleTokens {
    ttl: Duration,
    tokens: Mutex<HashMap<String, Entry>>,
}

impl SimpleTokens {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, tokens: Mutex::new(HashMap::new()) }
    }

    /// The random part of a new token, chosen by the member that checked the password.
    pub fn new_prefix() -> String {
        let mut rng = rand::rng();
        (0..PREFIX_LEN).map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char).collect()
    }

    /// The raft index a well-formed token was issued at.
    pub fn index_of(token: &str) -> Option<u64> {
        let (_, index) = token.split_once('.')?;
        if index.contains('.') {
            return None;
        }
        index.parse().ok()
    }

    pub fn assign(&self, token: String, user: &str) {
        let entry = Entry { user: user.to_string(), expires: Instant::now() + self.ttl };
        self.lock().insert(token, entry);
    }

    /// The user a live token belongs to; using it restarts its clock.
    pub fn user_of(&self, token: &str) -> Option<String> {
        let mut tokens = self.lock();
        let now = Instant::now();
        let entry = tokens.get_mut(token)?;
        if entry.expires <= now {
            tokens.remove(token);
            return None;
        }
        entry.expires = now + self.ttl;
        Some(entry.user.clone())
    }

    pub fn forget_user(&self, user: &str) {
        self.lock().retain(|_, entry| entry.user != user);
    }

    pub fn forget_all(&self) {
        self.lock().clear();
    }

    /// Drops expired tokens (called now and then, so that unused ones do not pile up).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.lock().retain(|_, entry| entry.expires > now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_index_and_expire_unused() {
        let prefix = SimpleTokens::new_prefix();
        assert_eq!(prefix.len(), 16);
        let token = format!("{prefix}.42");
        assert_eq!(SimpleTokens::index_of(&token), Some(42));
        assert_eq!(SimpleTokens::index_of("abc"), None);
        assert_eq!(SimpleTokens::index_of("a.b.1"), None);

        let tokens = SimpleTokens::new(Duration::from_millis(30));
        tokens.assign(token.clone(), "alice");
        assert_eq!(tokens.user_of(&token).as_deref(), Some("alice"));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(tokens.user_of(&token), None);

        tokens.assign(token.clone(), "alice");
        tokens.forget_user("alice");
        assert_eq!(tokens.user_of(&token), None);
    }
}
