//! SigV4 verification of API requests, with access keys from the collector's config.
//!
//! The signature is recomputed with the `aws-sigv4` crate (the AWS SDK's own signer) over
//! exactly the headers the client listed in `SignedHeaders`, at the client's `X-Amz-Date`,
//! with the secret of the named key, and compared in constant time. Nothing of the canonical
//! request is built here: a difference between this code and the SDKs cannot creep in.
//!
//! Refusals use the codes AWS answers with (all HTTP 403):
//!
//! | situation | `__type` |
//! |---|---|
//! | no `Authorization` header | `MissingAuthenticationTokenException` |
//! | not `AWS4-HMAC-SHA256`, a missing `Credential`/`SignedHeaders`/`Signature`, a malformed scope, no `X-Amz-Date`, an unsigned `host`/`x-amz-date` | `IncompleteSignatureException` |
//! | unknown access key id, a session token (temporary credentials are not issued here) | `UnrecognizedClientException` |
//! | wrong signature (wrong secret, altered request), wrong service in the scope, `X-Amz-Date` more than `[api] max_clock_skew` away (a replay) | `InvalidSignatureException` |
//! | a valid key without the needed scope | `AccessDeniedException` |
//!
//! With no `[[api.access_keys]]` configured, every request is refused
//! (`UnrecognizedClientException`) unless `[api] allow_unsigned_loopback_reads` is on: then
//! loopback clients get the read scope without a signature check (see [`Verifier::verify`]),
//! which lets the quickstart answer `aws cloudtrail validate-logs --endpoint-url
//! http://127.0.0.1:7480` with any credentials. It is off by default because "loopback" is
//! everyone behind a same-host proxy, a tunnel or a mesh sidecar.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use http::StatusCode;

use crate::config::{AccessKeyConfig, Scope};

/// An API refusal: HTTP status, `__type`, message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A 400 with `code` (the usual client error of the JSON protocols).
    pub fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn denied(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }

    /// `{"__type": ..., "message": ...}`
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"__type": self.code, "message": self.message}))
            .unwrap_or_default()
    }
}

const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// Who made a request, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The access key id; `None` for an unsigned loopback caller.
    pub access_key_id: Option<String>,
    pub scopes: Vec<Scope>,
    /// The account a `write` key may post for, if the key names one.
    pub account: Option<String>,
}

impl Caller {
    /// Refuses unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            return Ok(());
        }
        let who = match &self.access_key_id {
            Some(k) => format!("access key {k}"),
            None => "an unsigned loopback caller (no [[api.access_keys]] configured)".into(),
        };
        Err(ApiError::denied(
            "AccessDeniedException",
            format!("{who} does not have the {scope:?} scope"),
        ))
    }
}

/// Checks signatures against the configured keys.
pub struct Verifier {
    keys: HashMap<String, AccessKeyConfig>,
    max_skew: Duration,
    /// `[api] allow_unsigned_loopback_reads`.
    unsigned_loopback_reads: bool,
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn incomplete(message: impl Into<String>) -> ApiError {
    ApiError::denied("IncompleteSignatureException", message)
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, ApiError> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| incomplete("Unsupported authorization type: only AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let need = |name: &str| {
        incomplete(format!(
            "Authorization header requires '{name}' parameter. Authorization={value}"
        ))
    };
    let credential = credential.ok_or_else(|| need("Credential"))?;
    let signed = signed.ok_or_else(|| need("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| need("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" || scope.iter().any(|s| s.is_empty()) {
        return Err(incomplete(format!(
            "Credential {credential:?} must be <key id>/<yyyymmdd>/<region>/<service>/aws4_request"
        )));
    }
    if signature.len() != 64 || !signature.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::denied("InvalidSignatureException", MISMATCH));
    }
    Ok(Authorization {
        access_key_id: scope[0],
        date: scope[1],
        region: scope[2],
        service: scope[3],
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok()?;
    let secs = u64::try_from(t.and_utc().timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Verifier {
    pub fn new(keys: &[AccessKeyConfig], max_skew: Duration) -> Verifier {
        Verifier {
            keys: keys
                .iter()
                .map(|k| (k.access_key_id.clone(), k.clone()))
                .collect(),
            max_skew,
            unsigned_loopback_reads: false,
        }
    }

    /// Lets loopback clients read unsigned when no keys are configured
    /// (`[api] allow_unsigned_loopback_reads`).
    pub fn with_unsigned_loopback_reads(mut self, allow: bool) -> Verifier {
        self.unsigned_loopback_reads = allow;
        self
    }

    /// Whether any access key is configured.
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Verifies a request for `service` (`cloudtrail` or `cloudtrail-data`) whose body is
    /// `body`, sent from a loopback address or not, at `now`.
    ///
    /// With no keys configured, a loopback caller is let in with the read scope, signed or not
    /// (its signature cannot be checked: there is no secret to check it with). Anything else
    /// must carry a valid signature by a configured key.
    pub fn verify(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        service: &str,
        loopback: bool,
        now: SystemTime,
    ) -> Result<Caller, ApiError> {
        if self.keys.is_empty() {
            if loopback && self.unsigned_loopback_reads {
                return Ok(Caller {
                    access_key_id: None,
                    scopes: vec![Scope::Read],
                    account: None,
                });
            }
            return Err(ApiError::denied(
                "UnrecognizedClientException",
                if self.unsigned_loopback_reads {
                    "no [[api.access_keys]] are configured; only loopback clients may read"
                } else {
                    "no [[api.access_keys]] are configured and [api] allow_unsigned_loopback_reads is off: configure an access key to use the API"
                },
            ));
        }
        let Some(auth) = parts.headers.get(http::header::AUTHORIZATION) else {
            return Err(ApiError::denied(
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ));
        };
        let auth = auth
            .to_str()
            .map_err(|_| incomplete("the Authorization header is not ASCII"))?;
        let auth = parse_authorization(auth)?;
        let Some(key) = self.keys.get(auth.access_key_id) else {
            return Err(ApiError::denied(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ));
        };
        if parts.headers.contains_key("x-amz-security-token") {
            return Err(ApiError::denied(
                "UnrecognizedClientException",
                "The security token included in the request is invalid: temporary credentials are not accepted here",
            ));
        }
        if auth.service != service {
            return Err(ApiError::denied(
                "InvalidSignatureException",
                format!("Credential should be scoped to correct service: '{service}'."),
            ));
        }
        let amz_date = parts
            .headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
            })?;
        let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
            incomplete(format!("X-Amz-Date {amz_date:?} is not yyyymmddThhmmssZ"))
        })?;
        if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
            return Err(ApiError::denied(
                "InvalidSignatureException",
                format!(
                    "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
                    auth.date,
                    amz_date.get(..8).unwrap_or(amz_date)
                ),
            ));
        }
        let skew = match now.duration_since(signed_at) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        if skew > self.max_skew {
            let fmt = |t: SystemTime| {
                chrono::DateTime::<chrono::Utc>::from(t)
                    .format("%Y%m%dT%H%M%SZ")
                    .to_string()
            };
            let message = if signed_at < now {
                format!(
                    "Signature expired: {amz_date} is now earlier than {} ({} - {} min.)",
                    fmt(now - self.max_skew),
                    fmt(now),
                    self.max_skew.as_secs() / 60
                )
            } else {
                format!(
                    "Signature not yet current: {amz_date} is still later than {} ({} + {} min.)",
                    fmt(now + self.max_skew),
                    fmt(now),
                    self.max_skew.as_secs() / 60
                )
            };
            return Err(ApiError::denied("InvalidSignatureException", message));
        }
        for required in ["host", "x-amz-date"] {
            if !auth.signed_headers.contains(&required) {
                return Err(incomplete(format!("SignedHeaders must include {required}")));
            }
        }
        // The signed headers' values, as received (several values of one name joined by ',').
        let mut headers: Vec<(&str, String)> = Vec::new();
        for name in &auth.signed_headers {
            let values: Vec<&str> = parts
                .headers
                .get_all(*name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if values.is_empty() {
                if *name == "host"
                    && let Some(a) = parts.uri.authority()
                {
                    headers.push(("host", a.as_str().to_string()));
                    continue;
                }
                return Err(incomplete(format!(
                    "the signed header {name:?} is not in the request"
                )));
            }
            headers.push((name, values.join(",")));
        }
        let expected = compute_signature(
            parts.method.as_str(),
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
            headers.iter().map(|(k, v)| (*k, v.as_str())),
            body,
            auth.region,
            service,
            auth.access_key_id,
            &key.secret_access_key,
            signed_at,
        )
        .map_err(|e| incomplete(format!("the request cannot be canonicalized: {e}")))?;
        if !constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
            return Err(ApiError::denied("InvalidSignatureException", MISMATCH));
        }
        Ok(Caller {
            access_key_id: Some(key.access_key_id.clone()),
            scopes: key.scopes.clone(),
            account: key.account.clone(),
        })
    }
}

fn settings() -> aws_sigv4::http_request::SigningSettings {
    let mut s = aws_sigv4::http_request::SigningSettings::default();
    // Verification passes exactly the client's signed headers; none may be dropped.
    s.excluded_headers = Some(Vec::new());
    s
}

/// The hex signature of a request, by `aws-sigv4`.
#[allow(clippy::too_many_arguments)]
fn compute_signature<'a>(
    method: &'a str,
    path_and_query: &'a str,
    headers: impl Iterator<Item = (&'a str, &'a str)>,
    body: &'a [u8],
    region: &'a str,
    service: &'a str,
    access_key_id: &str,
    secret: &str,
    time: SystemTime,
) -> Result<String, String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, sign};
    let creds = aws_credential_types::Credentials::new(
        access_key_id,
        secret,
        None,
        None,
        "groundtrail-config",
    );
    let identity = creds.into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new(method, path_and_query, headers, SignableBody::Bytes(body))
        .map_err(|e| e.to_string())?;
    let out = sign(request, &params).map_err(|e| e.to_string())?;
    Ok(out.signature().to_string())
}

/// Signs a request for a client (the `lookup-events` command, tests): returns the headers to
/// add (`x-amz-date`, `authorization`). `headers` must include `host`.
#[allow(clippy::too_many_arguments)]
pub fn sign_request(
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    region: &str,
    service: &str,
    access_key_id: &str,
    secret: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, sign};
    let creds = aws_credential_types::Credentials::new(
        access_key_id,
        secret,
        None,
        None,
        "groundtrail-client",
    );
    let identity = creds.into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(aws_sigv4::http_request::SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new(
        method,
        path_and_query,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn verifier() -> Verifier {
        Verifier::new(
            &[
                AccessKeyConfig {
                    access_key_id: "AKIDREAD".into(),
                    secret_access_key: SECRET.into(),
                    scopes: vec![Scope::Read],
                    account: None,
                },
                AccessKeyConfig {
                    access_key_id: "AKIDWRITE".into(),
                    secret_access_key: "another-secret-of-enough-length".into(),
                    scopes: vec![Scope::Write],
                    account: Some("123456789012".into()),
                },
            ],
            Duration::from_secs(300),
        )
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// A request as botocore sends one to CloudTrail, signed with `secret` at `at`.
    fn request(
        key: &str,
        secret: &str,
        at: SystemTime,
        service: &str,
        body: &[u8],
    ) -> http::request::Parts {
        let target = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents";
        let base = [
            ("host", "127.0.0.1:7480"),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target),
        ];
        let signed = sign_request(
            "POST",
            "/?a=b%20c",
            &base,
            body,
            "us-east-1",
            service,
            key,
            secret,
            at,
        )
        .unwrap();
        let mut b = http::Request::post("/?a=b%20c");
        for (k, v) in base {
            b = b.header(k, v);
        }
        for (k, v) in &signed {
            b = b.header(k.as_str(), v.as_str());
        }
        b.header("user-agent", "aws-cli/1.46.2")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn accepts_a_good_signature_and_reports_the_scopes() {
        let parts = request("AKIDREAD", SECRET, t0(), "cloudtrail", b"{}");
        let caller = verifier()
            .verify(
                &parts,
                b"{}",
                "cloudtrail",
                false,
                t0() + Duration::from_secs(299),
            )
            .unwrap();
        assert_eq!(caller.access_key_id.as_deref(), Some("AKIDREAD"));
        caller.require(Scope::Read).unwrap();
        assert_eq!(
            caller.require(Scope::Write).unwrap_err().code,
            "AccessDeniedException"
        );
    }

    #[test]
    fn refuses_wrong_secret_altered_body_unknown_key_and_wrong_service() {
        let v = verifier();
        let now = t0();
        let code = |p: &http::request::Parts, body: &[u8], svc: &str| {
            v.verify(p, body, svc, true, now).unwrap_err().code
        };
        let wrong = request(
            "AKIDREAD",
            "not-the-secret-at-all",
            now,
            "cloudtrail",
            b"{}",
        );
        assert_eq!(
            code(&wrong, b"{}", "cloudtrail"),
            "InvalidSignatureException"
        );
        let good = request("AKIDREAD", SECRET, now, "cloudtrail", b"{}");
        assert_eq!(
            code(&good, b"{\"x\":1}", "cloudtrail"),
            "InvalidSignatureException"
        );
        assert_eq!(
            code(&good, b"{}", "cloudtrail-data"),
            "InvalidSignatureException"
        );
        let unknown = request("AKIDNOPE", SECRET, now, "cloudtrail", b"{}");
        assert_eq!(
            code(&unknown, b"{}", "cloudtrail"),
            "UnrecognizedClientException"
        );
        // A changed signed header.
        let mut changed = good.clone();
        changed.headers.insert(
            "x-amz-target",
            "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.ListPublicKeys"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            code(&changed, b"{}", "cloudtrail"),
            "InvalidSignatureException"
        );
        // An unsigned header may change (proxies add them).
        let mut extra = good.clone();
        extra
            .headers
            .insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        v.verify(&extra, b"{}", "cloudtrail", true, now).unwrap();
    }

    #[test]
    fn refuses_outside_the_clock_skew_both_ways() {
        let v = verifier();
        let parts = request("AKIDREAD", SECRET, t0(), "cloudtrail", b"");
        let late = v
            .verify(
                &parts,
                b"",
                "cloudtrail",
                true,
                t0() + Duration::from_secs(301),
            )
            .unwrap_err();
        assert_eq!(late.code, "InvalidSignatureException");
        assert!(
            late.message.starts_with("Signature expired"),
            "{}",
            late.message
        );
        let early = v
            .verify(
                &parts,
                b"",
                "cloudtrail",
                true,
                t0() - Duration::from_secs(301),
            )
            .unwrap_err();
        assert!(
            early.message.contains("not yet current"),
            "{}",
            early.message
        );
    }

    #[test]
    fn missing_and_malformed_authorization() {
        let v = verifier();
        let bare = http::Request::post("/").body(()).unwrap().into_parts().0;
        assert_eq!(
            v.verify(&bare, b"", "cloudtrail", true, t0())
                .unwrap_err()
                .code,
            "MissingAuthenticationTokenException"
        );
        for header in [
            "Basic abc",
            "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIDREAD/20270115/us-east-1/cloudtrail, SignedHeaders=host;x-amz-date, Signature=0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            let p = http::Request::post("/")
                .header("authorization", header)
                .header("x-amz-date", "20270115T080000Z")
                .body(())
                .unwrap()
                .into_parts()
                .0;
            assert_eq!(
                v.verify(&p, b"", "cloudtrail", true, t0())
                    .unwrap_err()
                    .code,
                "IncompleteSignatureException",
                "{header}"
            );
        }
        // No X-Amz-Date.
        let mut p = request("AKIDREAD", SECRET, t0(), "cloudtrail", b"");
        p.headers.remove("x-amz-date");
        assert_eq!(
            v.verify(&p, b"", "cloudtrail", true, t0())
                .unwrap_err()
                .code,
            "IncompleteSignatureException"
        );
    }

    #[test]
    fn without_keys_nothing_unless_unsigned_loopback_reads_are_allowed() {
        let bare = http::Request::post("/").body(()).unwrap().into_parts().0;
        let off = Verifier::new(&[], Duration::from_secs(300));
        assert_eq!(
            off.verify(&bare, b"", "cloudtrail", true, t0())
                .unwrap_err()
                .code,
            "UnrecognizedClientException"
        );
        let v = Verifier::new(&[], Duration::from_secs(300)).with_unsigned_loopback_reads(true);
        let c = v.verify(&bare, b"", "cloudtrail", true, t0()).unwrap();
        c.require(Scope::Read).unwrap();
        assert!(c.require(Scope::Write).is_err());
        assert_eq!(
            v.verify(&bare, b"", "cloudtrail", false, t0())
                .unwrap_err()
                .code,
            "UnrecognizedClientException"
        );
    }
}
