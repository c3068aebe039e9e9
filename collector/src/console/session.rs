//! Console sessions: sign-in with an API access key, a session cookie, CSRF tokens, expiry.
//!
//! Guarantees (tested below):
//! - A sign-in succeeds only with the id and secret of an `[[api.access_keys]]` key holding
//!   the `read` scope. The secret is compared in constant time (the SHA-256 of both sides, so
//!   neither its content nor its length shows in the timing), and an unknown key id is
//!   answered exactly like a wrong secret, after the same work.
//! - A session token is 32 bytes from the system's CSPRNG; only its SHA-256 is held, so a
//!   memory dump of the table does not hand out live cookies.
//! - A session ends `session_lifetime` after sign-in and `idle_timeout` after its last use,
//!   whichever comes first, and at sign-out. Expired sessions are dropped when met.
//! - Anything that changes state (sign-out) needs the session's CSRF token in the
//!   `X-CSRF-Token` header, compared in constant time: a cross-site page can make the browser
//!   send the cookie (SameSite=Strict already stops that in current browsers), but cannot read
//!   the token.
//! - At most `max_sessions` are held: a sign-in beyond that ends the least recently used one.
//!
//! Sessions live in memory only: a restart of the collector signs every console user out
//! (they sign in again; nothing else is lost). That keeps secrets-equivalent tokens off disk.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::config::{AccessKeyConfig, Scope};

/// The cookie holding the session token.
pub const COOKIE: &str = "gt_console";
/// The header carrying the CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Why a sign-in or a session check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Unknown key id or wrong secret: one answer for both.
    #[error("the access key id or the secret is wrong")]
    BadCredentials,
    /// A valid key without the `read` scope.
    #[error("this access key does not have the read scope")]
    NoReadScope,
    /// No session, or an ended one.
    #[error("not signed in (or the session ended)")]
    NoSession,
    /// A state-changing request without the session's CSRF token.
    #[error("missing or wrong CSRF token")]
    Csrf,
    /// The system's random source failed.
    #[error("no randomness for a session token")]
    Random,
}

/// A signed-in user's session, as handed to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The access key id that signed in.
    pub key_id: String,
    /// The CSRF token (hex) the page sends back on state-changing requests.
    pub csrf: String,
}

#[derive(Debug)]
struct Entry {
    session: Session,
    created: Instant,
    last_used: Instant,
}

/// The session table.
#[derive(Debug)]
pub struct Sessions {
    keys: Vec<AccessKeyConfig>,
    lifetime: Duration,
    idle: Duration,
    max: usize,
    /// SHA-256 of the token (hex) -> session.
    table: Mutex<HashMap<String, Entry>>,
    random: SystemRandom,
}

fn sha256(b: &[u8]) -> Vec<u8> {
    digest(&SHA256, b).as_ref().to_vec()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

impl Sessions {
    pub fn new(keys: &[AccessKeyConfig], lifetime: Duration, idle: Duration, max: usize) -> Self {
        Sessions {
            keys: keys.to_vec(),
            lifetime,
            idle,
            max: max.max(1),
            table: Mutex::new(HashMap::new()),
            random: SystemRandom::new(),
        }
    }

    fn random_hex(&self) -> Result<String, SessionError> {
        let mut b = [0u8; 32];
        self.random.fill(&mut b).map_err(|_| SessionError::Random)?;
        Ok(hex::encode(b))
    }

    /// Checks the credentials and opens a session: (cookie token, session).
    pub fn sign_in(
        &self,
        key_id: &str,
        secret: &str,
        now: Instant,
    ) -> Result<(String, Session), SessionError> {
        let given = sha256(secret.as_bytes());
        // The same hashing and comparison whether or not the id is known.
        let key = self.keys.iter().find(|k| k.access_key_id == key_id);
        let expected = sha256(key.map_or(b"\0no such key".as_slice(), |k| {
            k.secret_access_key.as_bytes()
        }));
        let ok = same(&given, &expected);
        let key = match key {
            Some(k) if ok => k,
            _ => return Err(SessionError::BadCredentials),
        };
        if !key.scopes.contains(&Scope::Read) {
            return Err(SessionError::NoReadScope);
        }
        let token = self.random_hex()?;
        let session = Session {
            key_id: key.access_key_id.clone(),
            csrf: self.random_hex()?,
        };
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        self.sweep(&mut table, now);
        while table.len() >= self.max {
            let oldest = table
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => table.remove(&k),
                None => break,
            };
        }
        table.insert(
            hex::encode(sha256(token.as_bytes())),
            Entry {
                session: session.clone(),
                created: now,
                last_used: now,
            },
        );
        Ok((token, session))
    }

    fn alive(&self, e: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(e.created) < self.lifetime
            && now.saturating_duration_since(e.last_used) < self.idle
    }

    fn sweep(&self, table: &mut HashMap<String, Entry>, now: Instant) {
        table.retain(|_, e| self.alive(e, now));
    }

    /// The live session of a cookie token, marked as used now.
    pub fn check(&self, token: &str, now: Instant) -> Result<Session, SessionError> {
        let id = hex::encode(sha256(token.as_bytes()));
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let alive = match table.get(&id) {
            Some(e) => self.alive(e, now),
            None => return Err(SessionError::NoSession),
        };
        if !alive {
            table.remove(&id);
            return Err(SessionError::NoSession);
        }
        let e = table.get_mut(&id).ok_or(SessionError::NoSession)?;
        e.last_used = now;
        Ok(e.session.clone())
    }

    /// [`Sessions::check`] plus the CSRF token a state-changing request must carry.
    pub fn check_csrf(
        &self,
        token: &str,
        csrf: Option<&str>,
        now: Instant,
    ) -> Result<Session, SessionError> {
        let s = self.check(token, now)?;
        match csrf {
            Some(c) if same(c.as_bytes(), s.csrf.as_bytes()) => Ok(s),
            _ => Err(SessionError::Csrf),
        }
    }

    /// Ends the session of a cookie token (sign-out).
    pub fn end(&self, token: &str) {
        let id = hex::encode(sha256(token.as_bytes()));
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Sessions held (for tests and the health page).
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session token in a `Cookie` header, if any.
pub fn cookie_token(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value of a new session: HttpOnly (scripts cannot read it), SameSite=Strict
/// (no other site's page makes the browser send it), Path=/console, Secure on TLS.
pub fn set_cookie(token: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, secret: &str, scopes: Vec<Scope>) -> AccessKeyConfig {
        AccessKeyConfig {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
            scopes,
            account: None,
        }
    }

    fn sessions() -> Sessions {
        Sessions::new(
            &[
                key("AKIDREAD", "read-secret-0123456789", vec![Scope::Read]),
                key("AKIDWRITE", "write-secret-0123456789", vec![Scope::Write]),
            ],
            Duration::from_secs(3600),
            Duration::from_secs(600),
            2,
        )
    }

    #[test]
    fn right_secret_signs_in_and_wrong_ones_do_not() {
        let s = sessions();
        let now = Instant::now();
        let (token, session) = s
            .sign_in("AKIDREAD", "read-secret-0123456789", now)
            .unwrap();
        assert_eq!(session.key_id, "AKIDREAD");
        assert_eq!(token.len(), 64);
        assert_eq!(s.check(&token, now).unwrap(), session);
        assert_eq!(
            s.sign_in("AKIDREAD", "read-secret-012345678", now),
            Err(SessionError::BadCredentials)
        );
        assert_eq!(
            s.sign_in("AKIDREAD", "", now),
            Err(SessionError::BadCredentials)
        );
        assert_eq!(
            s.sign_in("AKIDNOBODY", "read-secret-0123456789", now),
            Err(SessionError::BadCredentials)
        );
        assert_eq!(
            s.sign_in("AKIDWRITE", "write-secret-0123456789", now),
            Err(SessionError::NoReadScope)
        );
        assert_eq!(s.check("not-a-token", now), Err(SessionError::NoSession));
    }

    #[test]
    fn sessions_expire_idle_and_by_lifetime_and_at_sign_out() {
        let s = sessions();
        let t0 = Instant::now();
        let (token, _) = s.sign_in("AKIDREAD", "read-secret-0123456789", t0).unwrap();
        // Used every 9 minutes: the idle timer (10 min) never runs out ...
        let mut t = t0;
        for _ in 0..6 {
            t += Duration::from_secs(540);
            assert!(s.check(&token, t).is_ok());
        }
        // ... but the lifetime (1 h) does.
        t += Duration::from_secs(540);
        assert_eq!(s.check(&token, t), Err(SessionError::NoSession));

        let (token, _) = s.sign_in("AKIDREAD", "read-secret-0123456789", t0).unwrap();
        assert_eq!(
            s.check(&token, t0 + Duration::from_secs(601)),
            Err(SessionError::NoSession)
        );

        let (token, _) = s.sign_in("AKIDREAD", "read-secret-0123456789", t0).unwrap();
        s.end(&token);
        assert_eq!(s.check(&token, t0), Err(SessionError::NoSession));
    }

    #[test]
    fn state_changes_need_the_csrf_token() {
        let s = sessions();
        let now = Instant::now();
        let (token, session) = s
            .sign_in("AKIDREAD", "read-secret-0123456789", now)
            .unwrap();
        assert_eq!(s.check_csrf(&token, None, now), Err(SessionError::Csrf));
        assert_eq!(
            s.check_csrf(&token, Some("0000"), now),
            Err(SessionError::Csrf)
        );
        let (_, other) = s
            .sign_in("AKIDREAD", "read-secret-0123456789", now)
            .unwrap();
        assert_eq!(
            s.check_csrf(&token, Some(&other.csrf), now),
            Err(SessionError::Csrf),
            "another session's token"
        );
        assert_eq!(
            s.check_csrf(&token, Some(&session.csrf), now).unwrap(),
            session
        );
    }

    #[test]
    fn the_table_is_bounded_least_recently_used_first() {
        let s = sessions();
        let t0 = Instant::now();
        let (a, _) = s.sign_in("AKIDREAD", "read-secret-0123456789", t0).unwrap();
        let (b, _) = s
            .sign_in(
                "AKIDREAD",
                "read-secret-0123456789",
                t0 + Duration::from_secs(1),
            )
            .unwrap();
        assert!(s.check(&a, t0 + Duration::from_secs(2)).is_ok());
        let (c, _) = s
            .sign_in(
                "AKIDREAD",
                "read-secret-0123456789",
                t0 + Duration::from_secs(3),
            )
            .unwrap();
        assert_eq!(s.len(), 2);
        let t = t0 + Duration::from_secs(4);
        assert!(s.check(&a, t).is_ok());
        assert!(s.check(&c, t).is_ok());
        assert_eq!(s.check(&b, t), Err(SessionError::NoSession));
    }

    #[test]
    fn cookies() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "a=1; gt_console=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_token(&h).as_deref(), Some("abc"));
        assert_eq!(cookie_token(&http::HeaderMap::new()), None);
        let c = set_cookie("abc", Duration::from_secs(60), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
        assert!(!set_cookie("abc", Duration::from_secs(60), false).contains("Secure"));
    }
}
