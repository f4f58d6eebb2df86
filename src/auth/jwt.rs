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
    /// Always set when rsetcd signs; a token signed elsewhere may go without (as etcd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
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
    #[error("auth: public and private keys don't match")]
    KeyMismatch,
    #[error("auth: invalid auth options: {0} given twice")]
    Duplicate(String),
}

/// An unreadable key (the reason is logged; etcd only says the key is bad).
fn key_error(reason: &str) -> jsonwebtoken::errors::Error {
    tracing::debug!(reason, "unreadable JWT key");
    jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into()
}

/// A private key (PEM: RSA as PKCS#1 or PKCS#8, EC as SEC1 or PKCS#8, Ed25519 as PKCS#8)
/// and the public key derived from it, as etcd works it out when no pub-key is given.
fn private_key(
    algorithm: Algorithm,
    pem: &[u8],
) -> Result<(EncodingKey, DecodingKey), jsonwebtoken::errors::Error> {
    use ring::signature::KeyPair;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| key_error(&e.to_string()))?;
    let unreadable = |_| key_error("the private key does not match the sign method");
    match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => {
            let (ring_alg, curve_oid): (_, &[u8]) = if algorithm == Algorithm::ES256 {
                (&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, P256_OID)
            } else {
                (&ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING, P384_OID)
            };
            let pkcs8 = match &der {
                PrivateKeyDer::Sec1(sec1) => sec1_to_pkcs8(sec1.secret_sec1_der(), curve_oid),
                PrivateKeyDer::Pkcs8(p) => p.secret_pkcs8_der().to_vec(),
                _ => return Err(key_error("not an EC key")),
            };
            let rng = ring::rand::SystemRandom::new();
            let pair = ring::signature::EcdsaKeyPair::from_pkcs8(ring_alg, &pkcs8, &rng)
                .map_err(unreadable)?;
            let public = DecodingKey::from_ec_der(pair.public_key().as_ref());
            Ok((EncodingKey::from_ec_der(&pkcs8), public))
        }
        Algorithm::EdDSA => {
            let PrivateKeyDer::Pkcs8(p) = &der else { return Err(key_error("not a PKCS#8 key")) };
            let pair =
                ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(p.secret_pkcs8_der())
                    .map_err(unreadable)?;
            let public = DecodingKey::from_ed_der(pair.public_key().as_ref());
            Ok((EncodingKey::from_ed_der(p.secret_pkcs8_der()), public))
        }
        _ => {
            let pair = match &der {
                PrivateKeyDer::Pkcs1(p) => ring::rsa::KeyPair::from_der(p.secret_pkcs1_der()),
                PrivateKeyDer::Pkcs8(p) => ring::rsa::KeyPair::from_pkcs8(p.secret_pkcs8_der()),
                _ => return Err(key_error("not an RSA key")),
            }
            .map_err(|e| key_error(&e.to_string()))?;
            let public = DecodingKey::from_rsa_der(pair.public().as_ref());
            Ok((EncodingKey::from_rsa_pem(pem)?, public))
        }
    }
}

fn public_key(
    algorithm: Algorithm,
    pem: &[u8],
) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
    match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        _ => DecodingKey::from_rsa_pem(pem),
    }
}

/// id-ecPublicKey, then the named curve.
const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// Wraps a SEC1 `ECPrivateKey` in PKCS#8 (what the signing libraries read).
fn sec1_to_pkcs8(sec1: &[u8], curve_oid: &[u8]) -> Vec<u8> {
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> =
                len.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }
    let algorithm = der(0x30, &[EC_PUBLIC_KEY_OID, curve_oid].concat());
    let body = [&[0x02, 0x01, 0x00][..], &algorithm, &der(0x04, sec1)].concat();
    der(0x30, &body)
}

impl JwtTokens {
    /// `options` are the `key=value` parts after `jwt,` (unknown keys are ignored, as etcd
    /// only warns about them).
    pub fn from_options(options: &[(String, String)]) -> Result<JwtTokens, JwtError> {
        if let Some((key, _)) = options
            .iter()
            .enumerate()
            .find_map(|(i, (k, _))| options[..i].iter().find(|(o, _)| o == k))
        {
            return Err(JwtError::Duplicate(key.clone()));
        }
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
                let private = match get("priv-key") {
                    Some(path) => Some(private_key(algorithm, &read(path)?).map_err(bad(path))?),
                    None => None,
                };
                let public = match get("pub-key") {
                    Some(path) => Some(public_key(algorithm, &read(path)?).map_err(bad(path))?),
                    None => None,
                };
                match (private, public) {
                    (Some((signing, derived)), None) => (Some(signing), derived),
                    (Some((signing, _)), Some(verifying)) => {
                        let probe = JwtTokens {
                            algorithm,
                            signing: Some(signing.clone()),
                            verifying: verifying.clone(),
                            ttl,
                        };
                        let token = probe.sign("", 0)?;
                        if probe.verify(&token).is_none() {
                            return Err(JwtError::KeyMismatch);
                        }
                        (Some(signing), verifying)
                    }
                    (None, Some(verifying)) => (None, verifying),
                    (None, None) => return Err(JwtError::MissingKey("pub-key or priv-key")),
                }
            }
        };
        Ok(JwtTokens { algorithm, signing, verifying, ttl })
    }

    pub fn sign(&self, username: &str, revision: u64) -> Result<String, JwtError> {
        let key = self.signing.as_ref().ok_or(JwtError::VerifyOnly)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let exp = (now + self.ttl).as_secs();
        let claims = Claims { username: username.to_string(), revision, exp: Some(exp) };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key).map_err(JwtError::Sign)
    }

    /// The user and auth revision of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Option<(String, u64)> {
        // As golang-jwt: exp and nbf are checked when present, and none is required.
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.required_spec_claims = Default::default();
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
