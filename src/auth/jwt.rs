//! etcd's JWT tokens (`--auth-token jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...`):
//! signed claims `username`, `revision` (the auth revision at issue) and `exp`. Any member
//! holding the public key verifies them, so they survive restarts and work on every member;
//! a token from before an auth change fails with "revision of auth store is old".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

/// What `--auth-token jwt,...` names, read and checked at start-up.
#[derive(Clone)]
pub struct JwtTokens {
    algorithm: Algorithm,
    /// None: verify-only (etcd's pub-key without priv-key).
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens")
            .field("algorithm", &self.algorithm)
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("auth: invalid auth signature method {0:?}")]
    Method(String),
    #[error("auth: missing key data: {0}")]
    MissingKey(&'static str),
    #[error("auth: cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("auth: bad key in {path}: {source}")]
    Key { path: String, source: jsonwebtoken::errors::Error },
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,
    #[error("auth: signing a token: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

impl JwtTokens {
    /// `options` are the `key=value` parts after `jwt,` (unknown keys are ignored, as etcd
    /// only warns about them).
    pub fn from_options(options: &[(String, String)]) -> Result<JwtTokens, JwtError> {
        let get = |key: &str| options.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let method = get("sign-method").ok_or(JwtError::MissingKey("sign-method"))?;
        let algorithm: Algorithm =
            method.parse().map_err(|_| JwtError::Method(method.to_string()))?;
        let ttl = match get("ttl") {
            Some(text) => crate::config::go_duration(text).ok_or(JwtError::MissingKey("ttl"))?,
            None => Duration::from_secs(300),
        };
        let read = |path: &str| {
            std::fs::read(path).map_err(|source| JwtError::Read { path: path.to_string(), source })
        };
        let bad = |path: &str| {
            let path = path.to_string();
            move |source| JwtError::Key { path, source }
        };
        let (signing, verifying) = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let path = get("priv-key").ok_or(JwtError::MissingKey("priv-key"))?;
                let secret = read(path)?;
                (Some(EncodingKey::from_secret(&secret)), DecodingKey::from_secret(&secret))
            }
            _ => {
                let public = get("pub-key").ok_or(JwtError::MissingKey("pub-key"))?;
                let pem = read(public)?;
                let verifying = match algorithm {
                    Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                    _ => DecodingKey::from_rsa_pem(&pem),
                }
                .map_err(bad(public))?;
                let signing = match get("priv-key") {
                    Some(path) => {
                        let pem = read(path)?;
                        let key = match algorithm {
                            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
                            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
                            _ => EncodingKey::from_rsa_pem(&pem),
                        };
                        Some(key.map_err(bad(path))?)
                    }
                    None => None,
                };
                (signing, verifying)
            }
        };
        Ok(JwtTokens { algorithm, signing, verifying, ttl })
    }

    pub fn sign(&self, username: &str, revision: u64) -> Result<String, JwtError> {
        let key = self.signing.as_ref().ok_or(JwtError::VerifyOnly)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let exp = (now + self.ttl).as_secs();
        let claims = Claims { username: username.to_string(), revision, exp };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key).map_err(JwtError::Sign)
    }

    /// The user and auth revision of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Option<(String, u64)> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
        let data = jsonwebtoken::decode::<Claims>(token, &self.verifying, &validation)
            .map_err(|err| tracing::warn!(error = %err, "invalid auth token"))
            .ok()?;
        Some((data.claims.username, data.claims.revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_tokens_round_trip_and_refuse_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"0123456789abcdef0123456789abcdef").unwrap();
        let options = vec![
            ("sign-method".to_string(), "HS256".to_string()),
            ("priv-key".to_string(), secret.display().to_string()),
            ("ttl".to_string(), "1m".to_string()),
        ];
        let jwt = JwtTokens::from_options(&options).unwrap();
        let token = jwt.sign("alice", 7).unwrap();
        assert_eq!(jwt.verify(&token), Some(("alice".to_string(), 7)));
        let mut forged = token.clone();
        forged.push('x');
        assert_eq!(jwt.verify(&forged), None);
        assert!(matches!(
            JwtTokens::from_options(&[("sign-method".into(), "XX1".into())]),
            Err(JwtError::Method(_))
        ));
    }
}
