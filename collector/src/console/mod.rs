//! The web console: a page served by the collector under `/console` to investigate the trail
//! in a browser — the event history with any combination of filters, one event's record and
//! its related events, downloads of a query as CSV and JSON, an overview of a range, and the
//! trail's health.
//!
//! Guarantees (each tested where it is kept: [`session`], [`query`], [`export`], [`overview`];
//! end to end, in a real Chromium, by `tests/tests/console.rs`):
//! - **Self-contained.** The page (HTML, CSS, JavaScript, no framework) is compiled into the
//!   binary and served from it; it loads nothing from elsewhere (its Content-Security-Policy
//!   forbids it), so it works on an air-gapped network. The chart is SVG drawn by the page.
//! - **Nothing without a session.** Every `/console/api/` answer but the sign-in carries data
//!   only for a live session (see [`session`]): a sign-in with an `[[api.access_keys]]` key
//!   holding `read`, or, exactly where the API lets an unsigned loopback client read (no keys
//!   and `[api] allow_unsigned_loopback_reads`), a loopback browser without one. Anything
//!   else gets `401` and no data. The static page itself holds no data and is served to all.
//! - **State changes need the CSRF token** (sign-out; sign-in needs a JSON body, which a
//!   cross-site form cannot send, and a same-origin `Origin` when the browser sends one).
//! - **Bounded work per request.** A page of events reads at most [`query::DEFAULT_BUDGET`]
//!   events, an overview [`overview::MAX_SCANNED`], an export [`export::MAX_SCANNED`]; each
//!   runs on the blocking pool, not on the threads that serve ingest.
//! - **Read-only.** The console changes nothing in the trail, the journal or the history.

pub mod config;
pub mod export;
pub mod health;
pub mod overview;
pub mod query;
pub mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

use self::query::{Filters, Page, QueryError, Row};
use self::session::{SessionError, Sessions};
use crate::config::Config;
use crate::detector::Detector;
use crate::history::History;
use crate::journal::Journal;

/// Where the console lives.
pub const PREFIX: &str = "/console";
/// Largest sign-in body read.
const MAX_SIGNIN_BYTES: usize = 8 * 1024;
/// Related events: seconds either side of the event, by default and at most.
const RELATED_WINDOW: u64 = 15 * 60;
const MAX_RELATED_WINDOW: u64 = 7 * 86_400;
/// Related events of each kind shown at most.
const RELATED_ROWS: usize = 25;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// No script, style or image from anywhere but the collector; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

type Body = Full<Bytes>;

/// The console of one collector.
pub struct Console {
    config: Config,
    journal: Arc<Journal>,
    history: Arc<History>,
    detector: Option<Arc<Detector>>,
    sessions: Sessions,
    /// Cookies get `Secure` when the listeners speak TLS.
    secure: bool,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

/// Who a request is from.
struct Who {
    /// `None`: an unsigned loopback reader.
    key_id: Option<String>,
    csrf: Option<String>,
}

fn now() -> u64 {
    groundtrail_common::time::now_secs().timestamp().max(0) as u64
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_ok(v: &Value) -> Response<Body> {
    respond(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn fail(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    respond(
        status,
        "application/json",
        json!({"error": code, "message": message}).to_string(),
    )
}

fn refused(e: &SessionError) -> Response<Body> {
    let (status, code) = match e {
        SessionError::Csrf => (StatusCode::FORBIDDEN, "CsrfTokenMissing"),
        SessionError::NoReadScope => (StatusCode::FORBIDDEN, "AccessDenied"),
        SessionError::Random => (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure"),
        _ => (StatusCode::UNAUTHORIZED, "NotSignedIn"),
    };
    fail(status, code, &e.to_string())
}

fn query_failed(e: &QueryError) -> Response<Body> {
    match e {
        QueryError::History(h) => {
            tracing::error!("console: {h}");
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure",
                "the event history could not be read",
            )
        }
        other => fail(StatusCode::BAD_REQUEST, "InvalidQuery", &other.to_string()),
    }
}

/// One row of the event list (and of related events).
pub fn row_json(r: &Row) -> Value {
    let s = &r.summary;
    json!({
        "eventId": s.event_id,
        "eventTime": s.event_time,
        "eventName": s.event_name,
        "eventSource": s.event_source,
        "username": s.username,
        "sourceIp": r.extra.source_ip,
        "errorCode": r.extra.error_code,
        "readOnly": s.read_only,
        "region": s.region,
        "account": r.extra.account,
        "accessKeyId": s.access_key_id,
        "eventType": r.extra.event_type,
        "resources": s.resources.iter().map(|(t, n)| json!({"type": t, "name": n})).collect::<Vec<_>>(),
    })
}

fn page_json(p: &Page) -> Value {
    json!({
        "events": p.rows.iter().map(row_json).collect::<Vec<_>>(),
        "next": p.next,
        "scanned": p.scanned,
        "partial": p.partial,
        "index": p.index.map(|a| a.name()),
    })
}

impl Console {
    /// The console of a collector with `config`, reading `journal`, `history` and the alerts
    /// of `detector`.
    pub fn new(
        config: &Config,
        journal: Arc<Journal>,
        history: Arc<History>,
        detector: Option<Arc<Detector>>,
    ) -> Console {
        let c = &config.console;
        Console {
            config: config.clone(),
            journal,
            history,
            detector,
            sessions: Sessions::new(
                &config.api.access_keys,
                c.session_lifetime.get(),
                c.idle_timeout.get(),
                c.max_sessions,
            ),
            secure: config.server.tls_cert.is_some(),
        }
    }

    /// Whether `path` is the console's.
    pub fn is_console_path(path: &str) -> bool {
        path == PREFIX || path.starts_with("/console/")
    }

    fn retention(&self) -> u64 {
        self.config.history.retention.get().as_secs()
    }

    /// Unsigned loopback reads, as the API allows them.
    fn anonymous_allowed(&self, loopback: bool) -> bool {
        loopback
            && self.config.api.access_keys.is_empty()
            && self.config.api.allow_unsigned_loopback_reads
    }

    fn who(&self, headers: &http::HeaderMap, loopback: bool) -> Result<Who, SessionError> {
        if let Some(token) = session::cookie_token(headers)
            && let Ok(s) = self.sessions.check(&token, Instant::now())
        {
            return Ok(Who {
                key_id: Some(s.key_id),
                csrf: Some(s.csrf),
            });
        }
        if self.anonymous_allowed(loopback) {
            return Ok(Who {
                key_id: None,
                csrf: None,
            });
        }
        Err(SessionError::NoSession)
    }

    /// Answers a request under `/console`. `loopback`: the peer's address; `body_timeout`:
    /// how long a body may take (`[server] body_timeout`).
    pub async fn handle<B>(
        self: &Arc<Self>,
        parts: http::request::Parts,
        body: B,
        loopback: bool,
        body_timeout: Duration,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = parts.uri.path();
        let query = parts.uri.query().unwrap_or_default().to_string();
        match (&parts.method, path) {
            (&Method::GET, "/console") => {
                let mut r = respond(StatusCode::SEE_OTHER, "text/plain", "");
                r.headers_mut()
                    .insert(header::LOCATION, HeaderValue::from_static("/console/"));
                r
            }
            (&Method::GET, "/console/") => {
                respond(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML)
            }
            (&Method::GET, "/console/app.js") => {
                respond(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS)
            }
            (&Method::GET, "/console/app.css") => {
                respond(StatusCode::OK, "text/css; charset=utf-8", APP_CSS)
            }
            (&Method::POST, "/console/api/signin") => {
                self.sign_in(&parts, body, body_timeout).await
            }
            (&Method::POST, "/console/api/signout") => self.sign_out(&parts.headers),
            (&Method::GET, p) if p.starts_with("/console/api/") => {
                let who = match self.who(&parts.headers, loopback) {
                    Ok(w) => w,
                    Err(e) => return refused(&e),
                };
                let op = p["/console/api/".len()..].to_string();
                if op == "session" {
                    return json_ok(&json!({
                        "signedIn": true,
                        "accessKeyId": who.key_id,
                        "anonymous": who.key_id.is_none(),
                        "csrf": who.csrf,
                        "trail": self.config.trail.name,
                        "retention": self.retention(),
                    }));
                }
                let me = self.clone();
                tokio::task::spawn_blocking(move || me.read(&op, &query))
                    .await
                    .unwrap_or_else(|e| {
                        tracing::error!("console: {e}");
                        fail(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "InternalFailure",
                            "the request failed",
                        )
                    })
            }
            (_, p) if p.starts_with("/console/api/") => fail(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "method not allowed",
            ),
            _ => fail(StatusCode::NOT_FOUND, "NotFound", "no such page"),
        }
    }

    async fn sign_in<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
        timeout: Duration,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let h = &parts.headers;
        let json_body = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json_body {
            return fail(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "sign in with a JSON body",
            );
        }
        if let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            let host = h
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .or_else(|| parts.uri.authority().map(|a| a.as_str()))
                .unwrap_or_default();
            let same = origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest == host);
            if !same {
                return fail(
                    StatusCode::FORBIDDEN,
                    "CrossOrigin",
                    "sign-in from another origin",
                );
            }
        }
        let read =
            tokio::time::timeout(timeout, Limited::new(body, MAX_SIGNIN_BYTES).collect()).await;
        let Ok(Ok(bytes)) = read else {
            return fail(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "the body could not be read",
            );
        };
        let v: Value = serde_json::from_slice(&bytes.to_bytes()).unwrap_or(Value::Null);
        let id = v.get("accessKeyId").and_then(Value::as_str).unwrap_or("");
        let secret = v
            .get("secretAccessKey")
            .and_then(Value::as_str)
            .unwrap_or("");
        match self.sessions.sign_in(id, secret, Instant::now()) {
            Ok((token, s)) => {
                tracing::info!(access_key_id = %s.key_id, "console: signed in");
                let mut r =
                    json_ok(&json!({"signedIn": true, "accessKeyId": s.key_id, "csrf": s.csrf}));
                if let Ok(c) = HeaderValue::from_str(&session::set_cookie(
                    &token,
                    self.config.console.session_lifetime.get(),
                    self.secure,
                )) {
                    r.headers_mut().insert(header::SET_COOKIE, c);
                }
                r
            }
            Err(e) => {
                tracing::info!(access_key_id = %id, "console: sign-in refused: {e}");
                refused(&e)
            }
        }
    }

    fn sign_out(&self, headers: &http::HeaderMap) -> Response<Body> {
        let Some(token) = session::cookie_token(headers) else {
            return refused(&SessionError::NoSession);
        };
        let csrf = headers
            .get(session::CSRF_HEADER)
            .and_then(|v| v.to_str().ok());
        if let Err(e) = self.sessions.check_csrf(&token, csrf, Instant::now()) {
            return refused(&e);
        }
        self.sessions.end(&token);
        let mut r = json_ok(&json!({"signedIn": false}));
        if let Ok(c) = HeaderValue::from_str(&session::clear_cookie(self.secure)) {
            r.headers_mut().insert(header::SET_COOKIE, c);
        }
        r
    }

    /// The read operations (on the blocking pool).
    fn read(&self, op: &str, query: &str) -> Response<Body> {
        let (filters, params) = match Filters::from_query(query) {
            Ok(x) => x,
            Err(e) => return query_failed(&e),
        };
        let now = now();
        let retention = self.retention();
        match op {
            "events" => match query::page(
                &self.history,
                &filters,
                params.limit,
                params.token.as_deref(),
                query::DEFAULT_BUDGET,
                now,
                retention,
            ) {
                Ok(p) => json_ok(&page_json(&p)),
                Err(e) => query_failed(&e),
            },
            "event" => match self.event(params.id.as_deref().unwrap_or("")) {
                Ok(Some(row)) => {
                    let record: Value = serde_json::from_slice(&row.json).unwrap_or(Value::Null);
                    let mut v = row_json(&row);
                    v["record"] = record;
                    json_ok(&v)
                }
                Ok(None) => fail(StatusCode::NOT_FOUND, "NotFound", "no such event"),
                Err(e) => query_failed(&e),
            },
            "related" => self.related(&params, now, retention),
            "export.csv" | "export.json" => {
                match export::collect(&self.history, &filters, now, retention) {
                    Ok((rows, truncated)) => {
                        let (ct, body, name) = if op == "export.csv" {
                            (
                                "text/csv; charset=utf-8",
                                Bytes::from(export::csv(&rows)),
                                "groundtrail-events.csv",
                            )
                        } else {
                            (
                                "application/json",
                                Bytes::from(export::json(&rows)),
                                "groundtrail-events.json",
                            )
                        };
                        let mut r = respond(StatusCode::OK, ct, body);
                        let h = r.headers_mut();
                        if let Ok(v) =
                            HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
                        {
                            h.insert(header::CONTENT_DISPOSITION, v);
                        }
                        h.insert(
                            "x-groundtrail-truncated",
                            HeaderValue::from_static(if truncated { "true" } else { "false" }),
                        );
                        r
                    }
                    Err(e) => query_failed(&e),
                }
            }
            "overview" => match overview::overview(
                &self.history,
                &filters,
                now,
                retention,
                overview::MAX_SCANNED,
            ) {
                Ok(v) => json_ok(&v),
                Err(e) => query_failed(&e),
            },
            "health" => match health::health(
                &self.config,
                &self.journal,
                &self.history,
                self.detector.as_deref(),
                now,
            ) {
                Ok(mut v) => {
                    v["consoleSessions"] = json!(self.sessions.len());
                    json_ok(&v)
                }
                Err(e) => {
                    tracing::error!("console health: {e}");
                    fail(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalFailure",
                        "the health data could not be read",
                    )
                }
            },
            _ => fail(StatusCode::NOT_FOUND, "NotFound", "no such operation"),
        }
    }

    /// One event by id: a management event, else an Insights record.
    fn event(&self, id: &str) -> Result<Option<Row>, QueryError> {
        if id.is_empty() {
            return Err(QueryError::Invalid("id is required".into()));
        }
        for category in [query::Category::Management, query::Category::Insight] {
            let f = Filters {
                event_id: Some(id.to_string()),
                start: Some(0),
                end: Some(u64::MAX / 2),
                category,
                ..Filters::default()
            };
            let p = query::page(
                &self.history,
                &f,
                1,
                None,
                query::Budget::events(1),
                now(),
                u64::MAX / 2,
            )?;
            if let Some(r) = p.rows.into_iter().next() {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Events of the same user and of the same source IP within a window around an event.
    fn related(&self, params: &query::Params, now: u64, retention: u64) -> Response<Body> {
        let event = match self.event(params.id.as_deref().unwrap_or("")) {
            Ok(Some(r)) => r,
            Ok(None) => return fail(StatusCode::NOT_FOUND, "NotFound", "no such event"),
            Err(e) => return query_failed(&e),
        };
        let w = params
            .window
            .unwrap_or(RELATED_WINDOW)
            .min(MAX_RELATED_WINDOW);
        let t = event.summary.event_time;
        let around = |f: Filters| -> Result<Vec<Value>, QueryError> {
            let f = Filters {
                start: Some(t.saturating_sub(w)),
                end: Some(t.saturating_add(w)),
                ..f
            };
            let p = query::page(
                &self.history,
                &f,
                RELATED_ROWS + 1,
                None,
                query::DEFAULT_BUDGET,
                now,
                retention,
            )?;
            Ok(p.rows
                .iter()
                .filter(|r| r.summary.event_id != event.summary.event_id)
                .take(RELATED_ROWS)
                .map(row_json)
                .collect())
        };
        let by_user = match &event.summary.username {
            Some(u) => around(Filters {
                username: Some(u.clone()),
                ..Filters::default()
            }),
            None => Ok(vec![]),
        };
        let by_ip = match &event.extra.source_ip {
            Some(ip) => around(Filters {
                source_ip: Some(ip.clone()),
                ..Filters::default()
            }),
            None => Ok(vec![]),
        };
        match (by_user, by_ip) {
            (Ok(u), Ok(i)) => json_ok(&json!({
                "window": w,
                "username": event.summary.username,
                "sourceIp": event.extra.source_ip,
                "sameUser": u,
                "sameSourceIp": i,
            })),
            (Err(e), _) | (_, Err(e)) => query_failed(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AccessKeyConfig, Scope};

    fn console(keys: bool, unsigned: bool) -> (tempfile::TempDir, Arc<Console>) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.api.allow_unsigned_loopback_reads = unsigned;
        if keys {
            config.api.access_keys = vec![AccessKeyConfig {
                access_key_id: "AKIDREAD".into(),
                secret_access_key: "read-secret-0123456789".into(),
                scopes: vec![Scope::Read],
                account: None,
            }];
        }
        let journal = Arc::new(Journal::open(&dir.path().join("journal")).unwrap());
        let history = Arc::new(History::open(&dir.path().join("history")).unwrap());
        let c = Arc::new(Console::new(&config, journal, history, None));
        (dir, c)
    }

    async fn get(c: &Arc<Console>, path: &str, loopback: bool, cookie: Option<&str>) -> u16 {
        let mut req = http::Request::get(path);
        if let Some(token) = cookie {
            req = req.header(header::COOKIE, format!("{}={token}", session::COOKIE));
        }
        let (parts, _) = req.body(()).unwrap().into_parts();
        c.handle(
            parts,
            http_body_util::Empty::<Bytes>::new(),
            loopback,
            Duration::from_secs(5),
        )
        .await
        .status()
        .as_u16()
    }

    #[tokio::test]
    async fn unsigned_loopback_reads_only_where_the_api_allows_them() {
        let path = "/console/api/events";
        // No keys, unsigned loopback reads on: loopback in, others out.
        let (_d, c) = console(false, true);
        assert_eq!(get(&c, path, true, None).await, 200);
        assert_eq!(get(&c, path, false, None).await, 401);
        // No keys, off: nobody.
        let (_d, c) = console(false, false);
        assert_eq!(get(&c, path, true, None).await, 401);
        // Keys configured: the flag does not apply (as in the API); a session does.
        let (_d, c) = console(true, true);
        assert_eq!(get(&c, path, true, None).await, 401);
        let (token, _) = c
            .sessions
            .sign_in("AKIDREAD", "read-secret-0123456789", Instant::now())
            .unwrap();
        assert_eq!(get(&c, path, false, Some(&token)).await, 200);
        assert_eq!(get(&c, path, false, Some("forged")).await, 401);
        // The page itself holds no data and is served to anyone.
        assert_eq!(get(&c, "/console/", false, None).await, 200);
        assert_eq!(get(&c, "/console/nope", false, None).await, 404);
    }
}
