//! Who made an HTTP call, as a CloudTrail `userIdentity`.
//!
//! The sidecar tries the configured sources in order (`identity.order`, default
//! `["client_cert", "jwt", "trusted_header"]`); the first that yields a *verified* identity wins:
//!
//! | source | verified by | `userIdentity` |
//! | --- | --- | --- |
//! | `client_cert` | rustls, against `tls.client_ca` | `IAMUser`, `userName` = the certificate's CN (else first DNS SAN), ARN `arn:<p>:iam::<acct>:user/<host>/<name>` |
//! | `jwt` | signature + claims ([`super::jwt`]) | `WebIdentityUser` with `identityProvider` = `iss`; with a role claim an `AssumedRole` whose `sessionContext.sessionIssuer` is the role |
//! | `trusted_header` | only when the TCP peer is in `trusted_proxies` | like `jwt`, `identityProvider` = the configured provider name |
//!
//! Nothing verified: `userIdentity.type` is `Unknown`. `additionalEventData.identity` always says
//! which source decided (`source`) and, when something was presented but not accepted, what
//! and why (`rejected`): a forged or expired token, or an identity header sent by a peer that is
//! not a trusted proxy. Those are exactly the calls an investigator wants to find.

use groundtrail_common::event::{SessionAttributes, SessionContext, SessionIssuer, UserIdentity};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::jwt::{JwtConfig, JwtVerifier, claim_str};
use super::redact::truncate;
use crate::host_identity::HostIdentity;

/// Where an identity may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    /// A client certificate verified during the TLS handshake (needs `tls.client_ca`).
    ClientCert,
    /// A bearer JWT verified with the configured keys.
    Jwt,
    /// A header set by a trusted authenticating proxy (e.g. oauth2-proxy's `X-Forwarded-User`).
    TrustedHeader,
}

/// `[sidecar.identity]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Sources to try, in order. A source that is not configured is skipped.
    pub order: Vec<IdentitySource>,
    /// JWT verification; unset disables the `jwt` source.
    pub jwt: Option<JwtConfig>,
    /// Trusted auth-proxy header; unset disables the `trusted_header` source.
    pub trusted_header: Option<TrustedHeaderConfig>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            order: vec![
                IdentitySource::ClientCert,
                IdentitySource::Jwt,
                IdentitySource::TrustedHeader,
            ],
            jwt: None,
            trusted_header: None,
        }
    }
}

/// `[sidecar.identity.trusted_header]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustedHeaderConfig {
    /// Header carrying the authenticated user name.
    pub user_header: String,
    /// Header carrying the role or group the user acts as (first comma-separated entry).
    pub role_header: Option<String>,
    /// `identityProvider` written for these identities.
    pub provider: String,
}

impl Default for TrustedHeaderConfig {
    fn default() -> Self {
        TrustedHeaderConfig {
            user_header: "x-forwarded-user".into(),
            role_header: None,
            provider: "trusted-auth-proxy".into(),
        }
    }
}

/// The identity of one call and the note for `additionalEventData.identity`.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub identity: UserIdentity,
    pub note: Value,
}

/// Resolves identities with the loaded keys and settings.
#[derive(Debug)]
pub struct Resolver {
    order: Vec<IdentitySource>,
    jwt: Option<JwtVerifier>,
    trusted: Option<TrustedHeaderConfig>,
    /// The host whose account and ARNs name the callers.
    host: HostIdentity,
}

/// Longest name we put into an ARN or `userName`.
const MAX_NAME: usize = 256;

impl Resolver {
    /// A resolver; `jwt` is the verifier built from `config.jwt` (if any).
    pub fn new(config: &IdentityConfig, jwt: Option<JwtVerifier>, host: HostIdentity) -> Resolver {
        Resolver {
            order: config.order.clone(),
            jwt,
            trusted: config.trusted_header.clone(),
            host,
        }
    }

    /// Decides who made the call. `client_cert` is the name of a certificate rustls verified;
    /// `peer_trusted` says whether the TCP peer is a configured trusted proxy.
    pub fn resolve(
        &self,
        headers: &HeaderMap,
        client_cert: Option<&str>,
        peer_trusted: bool,
    ) -> Resolved {
        let mut rejected: Vec<Value> = Vec::new();
        for source in &self.order {
            match source {
                IdentitySource::ClientCert => {
                    if let Some(name) = client_cert {
                        return self.done(self.user(name), "client_cert", rejected);
                    }
                }
                IdentitySource::Jwt => {
                    let Some(v) = &self.jwt else { continue };
                    let Some(raw) = headers.get(v.config().header.as_str()) else {
                        continue;
                    };
                    let Some(token) = raw.to_str().ok().and_then(JwtVerifier::bearer) else {
                        continue;
                    };
                    match v.verify(token) {
                        Ok(claims) => match self.identity_from_claims(v.config(), &claims) {
                            Some(id) => return self.done(id, "jwt", rejected),
                            None => rejected.push(json!({
                                "source": "jwt",
                                "reason": format!("MissingClaim:{}", v.config().principal_claim),
                            })),
                        },
                        Err(r) => rejected.push(json!({
                            "source": "jwt",
                            "reason": r.reason,
                            "unverifiedClaims": r.claimed,
                        })),
                    }
                }
                IdentitySource::TrustedHeader => {
                    let Some(t) = &self.trusted else { continue };
                    let Some(user) = header_str(headers, &t.user_header) else {
                        continue;
                    };
                    if !peer_trusted {
                        rejected.push(json!({
                            "source": "trusted_header",
                            "reason": "UntrustedPeer",
                            "header": t.user_header,
                        }));
                        continue;
                    }
                    let role = t
                        .role_header
                        .as_deref()
                        .and_then(|h| header_str(headers, h))
                        .and_then(|r| r.split(',').next().map(|s| s.trim().to_string()))
                        .filter(|r| !r.is_empty());
                    let id = self.federated(&user, &user, role.as_deref(), &t.provider, None, None);
                    return self.done(id, "trusted_header", rejected);
                }
            }
        }
        let identity = UserIdentity {
            identity_type: Some("Unknown".into()),
            ..UserIdentity::default()
        };
        self.done(identity, "none", rejected)
    }

    fn done(&self, identity: UserIdentity, source: &str, rejected: Vec<Value>) -> Resolved {
        let mut note = Map::new();
        note.insert("source".into(), Value::String(source.into()));
        note.insert("verified".into(), Value::Bool(source != "none"));
        if !rejected.is_empty() {
            note.insert("rejected".into(), Value::Array(rejected));
        }
        Resolved {
            identity,
            note: Value::Object(note),
        }
    }

    fn user(&self, name: &str) -> UserIdentity {
        let name = truncate(name, MAX_NAME);
        UserIdentity {
            identity_type: Some("IAMUser".into()),
            principal_id: Some(name.clone()),
            arn: Some(self.host.user_arn(&name)),
            account_id: Some(self.host.account_id.clone()),
            user_name: Some(name),
            ..UserIdentity::default()
        }
    }

    fn identity_from_claims(
        &self,
        c: &JwtConfig,
        claims: &Map<String, Value>,
    ) -> Option<UserIdentity> {
        let principal = claim_str(claims, &c.principal_claim)?;
        let user = claim_str(claims, &c.user_name_claim).unwrap_or_else(|| principal.clone());
        let role = c.role_claim.as_deref().and_then(|r| claim_str(claims, r));
        let issuer = claim_str(claims, "iss").unwrap_or_else(|| "jwt".into());
        let created = claims
            .get("iat")
            .and_then(Value::as_i64)
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(groundtrail_common::time::json_time);
        let mfa = claims
            .get("amr")
            .and_then(Value::as_array)
            .map(|a| a.iter().any(|m| m.as_str() == Some("mfa")));
        let mut id = self.federated(&principal, &user, role.as_deref(), &issuer, created, mfa);
        id.credential_id = claim_str(claims, "jti").map(|j| truncate(&j, MAX_NAME));
        Some(id)
    }

    fn federated(
        &self,
        principal: &str,
        user: &str,
        role: Option<&str>,
        provider: &str,
        created: Option<String>,
        mfa: Option<bool>,
    ) -> UserIdentity {
        let (principal, user) = (truncate(principal, MAX_NAME), truncate(user, MAX_NAME));
        let (p, acct) = (&self.host.partition, &self.host.account_id);
        let attributes = SessionAttributes {
            creation_date: created,
            mfa_authenticated: Some(mfa.unwrap_or(false).to_string()),
            ..SessionAttributes::default()
        };
        match role {
            Some(role) => {
                let role = truncate(role, MAX_NAME);
                UserIdentity {
                    identity_type: Some("AssumedRole".into()),
                    principal_id: Some(format!("{role}:{principal}")),
                    arn: Some(format!("arn:{p}:sts::{acct}:assumed-role/{role}/{user}")),
                    account_id: Some(acct.clone()),
                    user_name: Some(user),
                    session_context: Some(SessionContext {
                        session_issuer: Some(SessionIssuer {
                            issuer_type: Some("Role".into()),
                            principal_id: Some(role.clone()),
                            arn: Some(format!("arn:{p}:iam::{acct}:role/{role}")),
                            account_id: Some(acct.clone()),
                            user_name: Some(role.clone()),
                            ..SessionIssuer::default()
                        }),
                        web_id_federation_data: Some(json!({ "federatedProvider": provider })),
                        attributes: Some(attributes),
                        ..SessionContext::default()
                    }),
                    identity_provider: Some(provider.to_string()),
                    ..UserIdentity::default()
                }
            }
            None => UserIdentity {
                identity_type: Some("WebIdentityUser".into()),
                principal_id: Some(format!("{provider}:{principal}")),
                account_id: Some(acct.clone()),
                user_name: Some(user),
                session_context: Some(SessionContext {
                    web_id_federation_data: Some(json!({ "federatedProvider": provider })),
                    attributes: Some(attributes),
                    ..SessionContext::default()
                }),
                identity_provider: Some(provider.to_string()),
                ..UserIdentity::default()
            },
        }
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn ctx() -> HostIdentity {
        crate::host_identity::testutil::web1()
    }

    fn resolver(dir: &std::path::Path, order: Vec<IdentitySource>) -> Resolver {
        let secret = dir.join("s");
        std::fs::write(&secret, "k").unwrap();
        let jwt = JwtConfig {
            hmac_secret_file: Some(secret),
            role_claim: Some("role".into()),
            ..JwtConfig::default()
        };
        let cfg = IdentityConfig {
            order,
            jwt: Some(jwt.clone()),
            trusted_header: Some(TrustedHeaderConfig {
                role_header: Some("x-forwarded-groups".into()),
                ..TrustedHeaderConfig::default()
            }),
        };
        Resolver::new(&cfg, Some(JwtVerifier::new(&jwt).unwrap()), ctx())
    }

    fn token(claims: Value, key: &[u8]) -> String {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(key)).unwrap()
    }

    fn headers(pairs: &[(&str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn order_decides_and_only_verified_sources_count() {
        let dir = tempfile::tempdir().unwrap();
        let r = resolver(dir.path(), IdentityConfig::default().order);
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let good = token(
            json!({"sub": "u-7", "preferred_username": "alice", "role": "admin", "iss": "idp", "exp": exp, "iat": 1700000000, "amr": ["pwd", "mfa"], "jti": "t-1"}),
            b"k",
        );
        let h = headers(&[("authorization", format!("Bearer {good}"))]);

        // Client certificate first.
        let c = r.resolve(&h, Some("svc-billing"), false);
        assert_eq!(c.identity.identity_type.as_deref(), Some("IAMUser"));
        assert_eq!(
            c.identity.arn.as_deref(),
            Some("arn:aws:iam::123456789012:user/web1/svc-billing")
        );
        assert_eq!(c.note["source"], "client_cert");

        // Then the JWT, mapped to an assumed role.
        let j = r.resolve(&h, None, false);
        let id = &j.identity;
        assert_eq!(id.identity_type.as_deref(), Some("AssumedRole"));
        assert_eq!(
            id.arn.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/admin/alice")
        );
        assert_eq!(id.user_name.as_deref(), Some("alice"));
        assert_eq!(id.credential_id.as_deref(), Some("t-1"));
        let sc = id.session_context.as_ref().unwrap();
        assert_eq!(
            sc.session_issuer.as_ref().unwrap().arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/admin")
        );
        let attrs = sc.attributes.as_ref().unwrap();
        assert_eq!(attrs.mfa_authenticated.as_deref(), Some("true"));
        assert_eq!(attrs.creation_date.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(j.note["source"], "jwt");
    }

    #[test]
    fn forged_token_is_unknown_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let r = resolver(dir.path(), vec![IdentitySource::Jwt]);
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let forged = token(json!({"sub": "root", "exp": exp}), b"attacker");
        let h = headers(&[("authorization", format!("Bearer {forged}"))]);
        let x = r.resolve(&h, None, false);
        assert_eq!(x.identity.identity_type.as_deref(), Some("Unknown"));
        assert!(x.identity.user_name.is_none() && x.identity.arn.is_none());
        assert_eq!(x.note["verified"], false);
        assert_eq!(x.note["rejected"][0]["reason"], "InvalidSignature");
        assert_eq!(x.note["rejected"][0]["unverifiedClaims"]["sub"], "root");
    }

    #[test]
    fn trusted_header_only_from_trusted_peers() {
        let dir = tempfile::tempdir().unwrap();
        let r = resolver(dir.path(), vec![IdentitySource::TrustedHeader]);
        let h = headers(&[
            ("x-forwarded-user", "bob".into()),
            ("x-forwarded-groups", "ops, dev".into()),
        ]);
        let t = r.resolve(&h, None, true);
        assert_eq!(t.identity.identity_type.as_deref(), Some("AssumedRole"));
        assert_eq!(
            t.identity.arn.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/ops/bob")
        );
        assert_eq!(
            t.identity.identity_provider.as_deref(),
            Some("trusted-auth-proxy")
        );
        let u = r.resolve(&h, None, false);
        assert_eq!(u.identity.identity_type.as_deref(), Some("Unknown"));
        assert_eq!(u.note["rejected"][0]["reason"], "UntrustedPeer");
        // Nothing presented at all.
        let n = r.resolve(&HeaderMap::new(), None, false);
        assert_eq!(n.note, json!({"source": "none", "verified": false}));
    }
}
