//! JWT bearer tokens: verification, and what an unverifiable token is recorded as.
//!
//! A token is trusted only when its signature verifies with a key the operator configured and
//! its standard claims pass (`exp` required and not past, `nbf`, and `iss`/`aud` when lists are
//! configured). Keys:
//! - `hmac_secret_file`: the raw bytes of a shared secret, for `HS256`/`HS384`/`HS512`;
//! - `jwks_file`: a JSON Web Key Set (the document an identity provider publishes at its
//!   `jwks_uri`, saved to a file — the sidecar makes no outbound calls), for `RS256`/`RS384`/
//!   `RS512`, `PS256`/`PS384`/`PS512`, `ES256`/`ES384` and `EdDSA`.
//!
//! The token's header names its algorithm; it is only accepted if a configured key is of that
//! algorithm (a key's `alg` member, or the default of its type: RSA -> RS256, P-256 -> ES256,
//! P-384 -> ES384), so an RSA public key can never be misused as an HMAC secret and `none`
//! never verifies. With a `kid` in the token, only the key with that `kid` is tried.
//!
//! A token that does not verify is *not* an identity. The sidecar records the call with
//! `userIdentity.type = "Unknown"` and says why in `additionalEventData.identity`, including the
//! subject and issuer the token *claimed* (marked unverified: useful to an investigator, never
//! used as the principal).

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `[sidecar.identity.jwt]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// File holding the HMAC secret (raw bytes, a trailing newline is ignored). Enables HS256,
    /// HS384 and HS512.
    pub hmac_secret_file: Option<PathBuf>,
    /// File holding a JSON Web Key Set. Enables RS*, PS*, ES256, ES384 and EdDSA.
    pub jwks_file: Option<PathBuf>,
    /// Accepted `iss` values. Empty: any issuer (set it in production).
    pub issuers: Vec<String>,
    /// Accepted `aud` values. Empty: the audience is not checked (set it in production).
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
    /// The request header carrying `Bearer <token>`.
    pub header: String,
    /// Claim that is the principal (`principalId`).
    pub principal_claim: String,
    /// Claim that is the friendly name (`userName`); falls back to the principal claim.
    pub user_name_claim: String,
    /// Claim naming the role the caller acts as (e.g. `role`, or `groups` whose first entry is
    /// used). When present, the identity is an `AssumedRole` whose session issuer is that role.
    pub role_claim: Option<String>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hmac_secret_file: None,
            jwks_file: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway_secs: 60,
            header: "authorization".into(),
            principal_claim: "sub".into(),
            user_name_claim: "preferred_username".into(),
            role_claim: None,
        }
    }
}

/// A JWT configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("sidecar.identity.jwt: cannot read {path}: {why}")]
    Read { path: String, why: String },
    #[error("sidecar.identity.jwt: {path} is not a usable JWKS: {why}")]
    Jwks { path: String, why: String },
    #[error("sidecar.identity.jwt: neither hmac_secret_file nor jwks_file is set")]
    NoKeys,
    #[error("sidecar.identity.jwt: {path} is empty")]
    EmptySecret { path: String },
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies tokens against the configured keys.
pub struct JwtVerifier {
    config: JwtConfig,
    keys: Vec<Key>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Short reason, e.g. `InvalidSignature`, `ExpiredSignature`, `UnknownKey`.
    pub reason: String,
    /// `sub` and `iss` as the token claims them, unverified (for the investigator).
    pub claimed: Map<String, Value>,
}

fn read(path: &Path) -> Result<Vec<u8>, JwtConfigError> {
    std::fs::read(path).map_err(|e| JwtConfigError::Read {
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

fn default_alg(params: &AlgorithmParameters) -> Option<Algorithm> {
    match params {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        // Symmetric keys in a JWKS file would make the file a secret; use hmac_secret_file.
        AlgorithmParameters::OctetKey(_) => None,
        _ => None,
    }
}

impl JwtVerifier {
    /// Loads the keys. Errors name the file and what is wrong with it.
    pub fn new(config: &JwtConfig) -> Result<JwtVerifier, JwtConfigError> {
        let mut keys = Vec::new();
        if let Some(path) = &config.hmac_secret_file {
            let mut secret = read(path)?;
            while secret.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                secret.pop();
            }
            if secret.is_empty() {
                return Err(JwtConfigError::EmptySecret {
                    path: path.display().to_string(),
                });
            }
            for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                keys.push(Key {
                    kid: None,
                    alg,
                    key: DecodingKey::from_secret(&secret),
                });
            }
        }
        if let Some(path) = &config.jwks_file {
            let jwks_err = |why: String| JwtConfigError::Jwks {
                path: path.display().to_string(),
                why,
            };
            let set: JwkSet =
                serde_json::from_slice(&read(path)?).map_err(|e| jwks_err(e.to_string()))?;
            for (i, jwk) in set.keys.iter().enumerate() {
                let alg = match jwk.common.key_algorithm {
                    Some(ka) => Algorithm::try_from(ka).ok(),
                    None => default_alg(&jwk.algorithm),
                };
                let Some(alg) = alg else {
                    return Err(jwks_err(format!(
                        "key {i}: no usable algorithm for this key type"
                    )));
                };
                if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                    return Err(jwks_err(format!(
                        "key {i}: symmetric keys belong in hmac_secret_file"
                    )));
                }
                let key =
                    DecodingKey::from_jwk(jwk).map_err(|e| jwks_err(format!("key {i}: {e}")))?;
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key,
                });
            }
            if set.keys.is_empty() {
                return Err(jwks_err("it holds no keys".into()));
            }
        }
        if keys.is_empty() {
            return Err(JwtConfigError::NoKeys);
        }
        Ok(JwtVerifier {
            config: config.clone(),
            keys,
        })
    }

    /// The configuration this verifier was built from.
    pub fn config(&self) -> &JwtConfig {
        &self.config
    }

    /// The token of a header value `Bearer <token>` (scheme case-insensitive).
    pub fn bearer(value: &str) -> Option<&str> {
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
            .filter(|t| !t.is_empty())
    }

    /// The verified claims of `token`, or why it was rejected.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, Rejected> {
        let reject = |reason: &str| Rejected {
            reason: reason.to_string(),
            claimed: claimed(token),
        };
        let header = jsonwebtoken::decode_header(token).map_err(|e| reject(&kind_name(&e)))?;
        let mut candidates = self.keys.iter().filter(|k| k.alg == header.alg).peekable();
        if candidates.peek().is_none() {
            return Err(reject("UnsupportedAlgorithm"));
        }
        let mut last = String::from("UnknownKey");
        let mut tried = false;
        for k in candidates {
            if let (Some(want), Some(have)) = (&header.kid, &k.kid)
                && want != have
            {
                continue;
            }
            tried = true;
            let mut v = Validation::new(k.alg);
            v.leeway = self.config.leeway_secs;
            v.validate_nbf = true;
            if self.config.issuers.is_empty() {
                v.iss = None;
            } else {
                v.set_issuer(&self.config.issuers);
            }
            if self.config.audiences.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(&self.config.audiences);
            }
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &v) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = kind_name(&e),
            }
        }
        if !tried {
            last = "UnknownKey".into();
        }
        Err(reject(&last))
    }
}

/// `sub` and `iss` as claimed, read without verification and cut short, for the record only.
fn claimed(token: &str) -> Map<String, Value> {
    let mut out = Map::new();
    if let Ok(c) = jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token) {
        for k in ["sub", "iss"] {
            if let Some(Value::String(s)) = c.get(k) {
                out.insert(k.into(), Value::String(super::redact::truncate(s, 128)));
            }
        }
    }
    out
}

fn kind_name(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidToken => "InvalidToken".into(),
        K::InvalidSignature => "InvalidSignature".into(),
        K::ExpiredSignature => "ExpiredSignature".into(),
        K::ImmatureSignature => "ImmatureSignature".into(),
        K::InvalidIssuer => "InvalidIssuer".into(),
        K::InvalidAudience => "InvalidAudience".into(),
        K::InvalidAlgorithm => "InvalidAlgorithm".into(),
        K::MissingRequiredClaim(c) => format!("MissingRequiredClaim:{c}"),
        K::InvalidClaimFormat(c) => format!("InvalidClaimFormat:{c}"),
        _ => "InvalidToken".into(),
    }
}

/// A claim as a string: strings as they are, numbers printed, arrays by their first string.
pub fn claim_str(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) => items.iter().find_map(|i| i.as_str().map(str::to_string)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hmac_verifier(dir: &Path) -> JwtVerifier {
        let p = dir.join("secret");
        std::fs::write(&p, "s3cret\n").unwrap();
        JwtVerifier::new(&JwtConfig {
            hmac_secret_file: Some(p),
            issuers: vec!["https://idp.example".into()],
            ..JwtConfig::default()
        })
        .unwrap()
    }

    fn hs(claims: Value, secret: &[u8]) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn hmac_tokens_verify_and_bad_ones_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let v = hmac_verifier(dir.path());
        let good = json!({"sub": "u-1", "iss": "https://idp.example", "exp": now() + 600});
        let claims = v.verify(&hs(good.clone(), b"s3cret")).unwrap();
        assert_eq!(claims["sub"], "u-1");

        let e = v.verify(&hs(good.clone(), b"wrong")).unwrap_err();
        assert_eq!(e.reason, "InvalidSignature");
        assert_eq!(e.claimed["sub"], "u-1", "claimed subject kept, unverified");

        let expired = json!({"sub": "u-1", "iss": "https://idp.example", "exp": now() - 3600});
        assert_eq!(
            v.verify(&hs(expired, b"s3cret")).unwrap_err().reason,
            "ExpiredSignature"
        );
        let other_iss = json!({"sub": "u-1", "iss": "https://evil", "exp": now() + 600});
        assert_eq!(
            v.verify(&hs(other_iss, b"s3cret")).unwrap_err().reason,
            "InvalidIssuer"
        );
        let no_exp = json!({"sub": "u-1", "iss": "https://idp.example"});
        assert!(
            v.verify(&hs(no_exp, b"s3cret"))
                .unwrap_err()
                .reason
                .starts_with("MissingRequiredClaim")
        );
        assert_eq!(v.verify("not.a.token").unwrap_err().reason, "InvalidToken");
        // alg "none": header parses only with a known alg; either way it never verifies.
        let none = format!(
            "{}.{}.",
            base64_url(br#"{"alg":"none","typ":"JWT"}"#),
            base64_url(good.to_string().as_bytes())
        );
        assert!(v.verify(&none).is_err());
    }

    fn base64_url(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    #[test]
    fn config_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            JwtVerifier::new(&JwtConfig::default()),
            Err(JwtConfigError::NoKeys)
        ));
        let p = dir.path().join("jwks.json");
        std::fs::write(&p, "{\"keys\": 3}").unwrap();
        let e = JwtVerifier::new(&JwtConfig {
            jwks_file: Some(p.clone()),
            ..JwtConfig::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("jwks.json"), "{e}");
        let e = JwtVerifier::new(&JwtConfig {
            hmac_secret_file: Some(dir.path().join("missing")),
            ..JwtConfig::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(JwtVerifier::bearer("Bearer abc"), Some("abc"));
        assert_eq!(JwtVerifier::bearer("bearer  abc "), Some("abc"));
        assert_eq!(JwtVerifier::bearer("Basic abc"), None);
        assert_eq!(JwtVerifier::bearer("Bearer "), None);
    }
}
