//! The route table: which API action an HTTP request is, and on which resources.
//!
//! CloudTrail names every call by its action (`GetObject`, `RunInstances`) and lists the
//! resources it touched as ARNs. An HTTP service has neither, so the operator writes a small
//! table in the sidecar config:
//!
//! ```toml
//! [[sidecar.routes]]
//! method = "GET"
//! path = "/orders/{id}"
//! event_name = "GetOrder"
//! resources = [{ type = "MyApi::Order", arn = "arn:{partition}:myapi:{region}:{account}:order/{id}" }]
//! ```
//!
//! Patterns are matched segment by segment: a literal segment must be equal, `{name}` takes
//! exactly one non-empty segment, and `{name+}` (only as the last segment) takes one or more. The
//! first route in table order that matches wins, so list specific routes before general ones.
//! `method = "*"` matches any method.
//!
//! ARN templates may use the path parameters of their route and `{partition}`, `{region}`,
//! `{account}` and `{host}`; a template naming anything else is refused when the config loads,
//! not at request time.
//!
//! A request no route matches is still recorded: its `eventName` is `<METHOD> <route>`, where
//! the route is the path with identifier-like segments (numbers, UUIDs, long hex or mixed
//! letter-digit tokens) replaced by `{id}`, so that `GET /orders/8812` and `GET /orders/8813`
//! group under one name (`GET /orders/{id}`) instead of one name per object.

use groundtrail_common::Resource;
use groundtrail_common::percent;
use serde::{Deserialize, Serialize};

use crate::host_identity::HostIdentity;

/// One `[[sidecar.routes]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// HTTP method (`GET`, `POST`, ...), case-insensitive, or `*` for any.
    pub method: String,
    /// Path pattern, e.g. `/orders/{id}` or `/files/{path+}`.
    pub path: String,
    /// The `eventName` of matching requests, e.g. `GetOrder`.
    pub event_name: String,
    /// `readOnly` of matching requests. Unset: true for GET, HEAD and OPTIONS, else false.
    #[serde(default)]
    pub read_only: Option<bool>,
    /// The resources a matching request acts on (`resources[]`).
    #[serde(default)]
    pub resources: Vec<ResourceTemplate>,
}

/// One entry of a route's `resources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceTemplate {
    /// The resource type, e.g. `MyApi::Order` (CloudTrail writes `AWS::<service>::<type>`).
    #[serde(rename = "type")]
    pub resource_type: String,
    /// ARN template, e.g. `arn:{partition}:myapi:{region}:{account}:order/{id}`.
    pub arn: String,
}

/// A route table entry or template that cannot be used, with the route's position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sidecar.routes[{index}] ({method} {path}): {why}")]
pub struct RouteError {
    pub index: usize,
    pub method: String,
    pub path: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

#[derive(Debug, Clone)]
struct Route {
    method: Option<String>,
    segments: Vec<Segment>,
    event_name: String,
    read_only: Option<bool>,
    resources: Vec<(String, Vec<Piece>)>,
}

/// What the table says about one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    /// The `eventName`.
    pub event_name: String,
    /// The `readOnly` flag.
    pub read_only: bool,
    /// `resources[]` (empty for unmatched requests).
    pub resources: Vec<Resource>,
    /// Path parameters, percent-decoded, in pattern order (they go into `requestParameters`).
    pub params: Vec<(String, String)>,
    /// Whether a configured route matched (false: the fallback name).
    pub matched: bool,
}

/// The compiled route table.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

const BUILTINS: [&str; 4] = ["partition", "region", "account", "host"];

fn parse_pattern(path: &str) -> Result<Vec<Segment>, String> {
    if !path.starts_with('/') {
        return Err("path must start with '/'".into());
    }
    let parts: Vec<&str> = path[1..].split('/').collect();
    let mut out = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() && parts.len() == 1 {
            break; // the pattern "/"
        }
        if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            let (name, rest) = match inner.strip_suffix('+') {
                Some(n) => (n, true),
                None => (inner, false),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "parameter {{{inner}}} must be a name of letters, digits and '_'"
                ));
            }
            if BUILTINS.contains(&name) {
                return Err(format!(
                    "parameter {{{name}}} would hide the ARN variable of that name"
                ));
            }
            if names.iter().any(|n| n == name) {
                return Err(format!("parameter {{{name}}} appears twice"));
            }
            names.push(name.to_string());
            if rest {
                if i + 1 != parts.len() {
                    return Err(format!("{{{name}+}} must be the last segment"));
                }
                out.push(Segment::Rest(name.to_string()));
            } else {
                out.push(Segment::Param(name.to_string()));
            }
        } else if part.contains('{') || part.contains('}') {
            return Err(format!(
                "segment {part:?}: a parameter must be a whole segment"
            ));
        } else {
            out.push(Segment::Literal(part.to_string()));
        }
    }
    Ok(out)
}

fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(Piece::Text(rest[..open].to_string()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("ARN template {t:?}: '{{' without '}}'"))?;
        out.push(Piece::Var(after[..close].to_string()));
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("ARN template {t:?}: '}}' without '{{'"));
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

fn default_read_only(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

impl RouteTable {
    /// Compiles and checks the table: patterns, parameter names, and that every ARN template
    /// only uses variables it can have.
    pub fn compile(routes: &[RouteConfig]) -> Result<RouteTable, RouteError> {
        let mut out = Vec::with_capacity(routes.len());
        for (index, r) in routes.iter().enumerate() {
            let err = |why: String| RouteError {
                index,
                method: r.method.clone(),
                path: r.path.clone(),
                why,
            };
            let method = r.method.trim().to_ascii_uppercase();
            if method.is_empty() || !method.chars().all(|c| c.is_ascii_alphabetic() || c == '*') {
                return Err(err(format!(
                    "method {:?} is not an HTTP method or '*'",
                    r.method
                )));
            }
            if r.event_name.trim().is_empty() {
                return Err(err("event_name is empty".into()));
            }
            let segments = parse_pattern(&r.path).map_err(err)?;
            let params: Vec<&str> = segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Param(n) | Segment::Rest(n) => Some(n.as_str()),
                    Segment::Literal(_) => None,
                })
                .collect();
            let mut resources = Vec::new();
            for res in &r.resources {
                let pieces = parse_template(&res.arn).map_err(err)?;
                for p in &pieces {
                    if let Piece::Var(v) = p
                        && !BUILTINS.contains(&v.as_str())
                        && !params.contains(&v.as_str())
                    {
                        return Err(err(format!(
                            "ARN template {:?} uses {{{v}}}, which is neither a parameter of the path nor one of {{partition}}, {{region}}, {{account}}, {{host}}",
                            res.arn
                        )));
                    }
                }
                resources.push((res.resource_type.clone(), pieces));
            }
            out.push(Route {
                method: (method != "*").then_some(method),
                segments,
                event_name: r.event_name.trim().to_string(),
                read_only: r.read_only,
                resources,
            });
        }
        Ok(RouteTable { routes: out })
    }

    /// Maps one request. Never fails: an unmatched request gets the fallback name.
    pub fn resolve(&self, method: &str, path: &str, ctx: &HostIdentity) -> RouteMatch {
        let parts: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        for route in &self.routes {
            if let Some(m) = &route.method
                && m != method
            {
                continue;
            }
            if let Some(raw) = match_segments(&route.segments, &parts) {
                let params: Vec<(String, String)> = raw
                    .iter()
                    .map(|(k, v)| (k.clone(), percent::decode(v)))
                    .collect();
                let resources = route
                    .resources
                    .iter()
                    .map(|(ty, pieces)| Resource {
                        account_id: Some(ctx.account_id.clone()),
                        resource_type: Some(ty.clone()),
                        arn: Some(render(pieces, &raw, ctx)),
                        ..Resource::default()
                    })
                    .collect();
                return RouteMatch {
                    event_name: route.event_name.clone(),
                    read_only: route.read_only.unwrap_or_else(|| default_read_only(method)),
                    resources,
                    params,
                    matched: true,
                };
            }
        }
        RouteMatch {
            event_name: fallback_name(method, path),
            read_only: default_read_only(method),
            resources: Vec::new(),
            params: Vec::new(),
            matched: false,
        }
    }
}

fn match_segments(segments: &[Segment], parts: &[&str]) -> Option<Vec<(String, String)>> {
    // "/" pattern: no segments; matches only the path "/" (parts == [""]).
    if segments.is_empty() {
        return (parts.len() == 1 && parts[0].is_empty()).then(Vec::new);
    }
    let mut params = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        match seg {
            Segment::Literal(l) => {
                if parts.get(i) != Some(&l.as_str()) {
                    return None;
                }
            }
            Segment::Param(name) => {
                let p = parts.get(i).filter(|p| !p.is_empty())?;
                params.push((name.clone(), (*p).to_string()));
            }
            Segment::Rest(name) => {
                let rest = parts.get(i..)?;
                if rest.is_empty() || rest.iter().all(|p| p.is_empty()) {
                    return None;
                }
                params.push((name.clone(), rest.join("/")));
                return Some(params);
            }
        }
    }
    (parts.len() == segments.len()).then_some(params)
}

fn render(pieces: &[Piece], params: &[(String, String)], ctx: &HostIdentity) -> String {
    let mut s = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => s.push_str(t),
            Piece::Var(v) => s.push_str(match v.as_str() {
                "partition" => &ctx.partition,
                "region" => &ctx.region,
                "account" => &ctx.account_id,
                "host" => &ctx.host,
                other => params
                    .iter()
                    .find(|(k, _)| k == other)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or(""),
            }),
        }
    }
    s
}

/// Most path characters kept in a fallback event name.
const MAX_FALLBACK_PATH: usize = 200;

/// `<METHOD> <route>` for a request no route matched.
pub fn fallback_name(method: &str, path: &str) -> String {
    let mut route = String::new();
    for seg in path.strip_prefix('/').unwrap_or(path).split('/') {
        route.push('/');
        if looks_like_id(seg) {
            route.push_str("{id}");
        } else {
            route.push_str(seg);
        }
        if route.len() > MAX_FALLBACK_PATH {
            let mut cut = MAX_FALLBACK_PATH;
            while !route.is_char_boundary(cut) {
                cut -= 1;
            }
            route.truncate(cut);
            route.push_str("...");
            break;
        }
    }
    format!("{method} {route}")
}

/// Numbers, UUIDs, long hex, and long tokens mixing letters and digits are identifiers.
fn looks_like_id(seg: &str) -> bool {
    if seg.is_empty() {
        return false;
    }
    let b = seg.as_bytes();
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if b.len() >= 16 && b.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-') {
        return true;
    }
    if seg.contains('%') {
        return true; // encoded names are data, not API structure
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    b.len() >= 12
        && digits >= 2
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> HostIdentity {
        crate::host_identity::testutil::web1()
    }

    fn route(method: &str, path: &str, name: &str, arn: Option<&str>) -> RouteConfig {
        RouteConfig {
            method: method.into(),
            path: path.into(),
            event_name: name.into(),
            read_only: None,
            resources: arn
                .map(|a| {
                    vec![ResourceTemplate {
                        resource_type: "MyApi::Order".into(),
                        arn: a.into(),
                    }]
                })
                .unwrap_or_default(),
        }
    }

    #[test]
    fn matches_in_order_with_params_and_arns() {
        let t = RouteTable::compile(&[
            route("GET", "/orders/export", "ExportOrders", None),
            route(
                "GET",
                "/orders/{id}",
                "GetOrder",
                Some("arn:{partition}:myapi:{region}:{account}:order/{id}"),
            ),
            route("delete", "/orders/{id}", "DeleteOrder", None),
            route(
                "*",
                "/files/{path+}",
                "TouchFile",
                Some("arn:{partition}:files::{account}:file/{host}/{path}"),
            ),
            route("GET", "/", "Root", None),
        ])
        .unwrap();
        let m = t.resolve("GET", "/orders/42", &ctx());
        assert_eq!(m.event_name, "GetOrder");
        assert!(m.read_only && m.matched);
        assert_eq!(m.params, vec![("id".to_string(), "42".to_string())]);
        assert_eq!(
            m.resources[0].arn.as_deref(),
            Some("arn:aws:myapi:onprem-1:123456789012:order/42")
        );
        assert_eq!(
            m.resources[0].resource_type.as_deref(),
            Some("MyApi::Order")
        );
        assert_eq!(
            t.resolve("GET", "/orders/export", &ctx()).event_name,
            "ExportOrders"
        );
        let d = t.resolve("DELETE", "/orders/42", &ctx());
        assert_eq!(d.event_name, "DeleteOrder");
        assert!(!d.read_only);
        let f = t.resolve("PUT", "/files/etc/app/x.conf", &ctx());
        assert_eq!(f.event_name, "TouchFile");
        assert_eq!(
            f.resources[0].arn.as_deref(),
            Some("arn:aws:files::123456789012:file/web1/etc/app/x.conf")
        );
        assert_eq!(t.resolve("GET", "/", &ctx()).event_name, "Root");
        // No empty parameter, no extra segments.
        assert!(!t.resolve("GET", "/orders/", &ctx()).matched);
        assert!(!t.resolve("GET", "/orders/1/items", &ctx()).matched);
        assert!(!t.resolve("PUT", "/files/", &ctx()).matched);
        // Path parameters are decoded for requestParameters, raw in the ARN.
        let e = t.resolve("GET", "/orders/a%20b", &ctx());
        assert_eq!(e.params[0].1, "a b");
    }

    #[test]
    fn fallback_groups_identifiers() {
        let t = RouteTable::default();
        let m = t.resolve("POST", "/orders/8812/items", &ctx());
        assert!(!m.matched && !m.read_only);
        assert_eq!(m.event_name, "POST /orders/{id}/items");
        assert_eq!(
            fallback_name("GET", "/u/3f2b8c1e-1111-4a0c-9f1b-2b6f2c1d3e4f/avatar"),
            "GET /u/{id}/avatar"
        );
        assert_eq!(fallback_name("GET", "/v1/users/me"), "GET /v1/users/me");
        assert_eq!(fallback_name("GET", "/t/ab12cd34ef56gh"), "GET /t/{id}");
        let long = format!("/{}", "a/".repeat(300));
        assert!(fallback_name("GET", &long).len() < 220);
        assert!(t.resolve("HEAD", "/x", &ctx()).read_only);
    }

    #[test]
    fn refuses_bad_tables_with_the_route_named() {
        let bad = [
            route("GET", "orders", "X", None),
            route("GET", "/a/{}", "X", None),
            route("GET", "/a/{id}/{id}", "X", None),
            route("GET", "/a/{p+}/b", "X", None),
            route("GET", "/a/x{id}", "X", None),
            route("GET", "/a/{id}", "X", Some("arn:{partition}:x:::{nope}")),
            route("GET", "/a/{id}", "X", Some("arn:{partition")),
            route("GE T", "/a", "X", None),
            route("GET", "/a", " ", None),
            route("GET", "/a/{region}", "X", None),
        ];
        for (i, r) in bad.iter().enumerate() {
            let e = RouteTable::compile(std::slice::from_ref(r)).unwrap_err();
            assert!(e.to_string().starts_with("sidecar.routes[0]"), "{i}: {e}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent::decode("a%2Fb%zz%4"), "a/b%zz%4");
        assert_eq!(percent::decode_query("a+b%20c"), "a b c");
        assert_eq!(percent::decode("%"), "%");
    }
}
