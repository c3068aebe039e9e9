//! `groundtrail-collector lookup-events`: the AWS CLI's `aws cloudtrail lookup-events`, against
//! the collector's API ([`crate::api`]), with the same flags and the same JSON output.
//!
//! Like the AWS CLI, it pages automatically (merging every page's `Events`) unless
//! `--max-results` or `--next-token` is given, in which case it makes one call and prints the
//! answer as is, `NextToken` included. Requests are signed with SigV4 (service `cloudtrail`) when
//! `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` are set, and sent unsigned otherwise (enough
//! for a collector on loopback with no `[[api.access_keys]]` and
//! `[api] allow_unsigned_loopback_reads = true`).
//!
//! `--region` means what it means to the AWS CLI: the answer holds that region's events only
//! (LookupEvents is regional). Signed, it is the signature scope's region; unsigned, it is sent
//! in the `X-Groundtrail-Region` header. Without `--region`, `AWS_REGION` or
//! `AWS_DEFAULT_REGION`, it is `us-east-1`.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};

/// `lookup-events`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `AttributeKey=<key>,AttributeValue=<value>` (at most one is accepted by the API).
    #[arg(long, num_args = 1..)]
    pub lookup_attributes: Vec<String>,
    /// Only events at or after this time (ISO 8601 or epoch seconds).
    #[arg(long)]
    pub start_time: Option<String>,
    /// Only events at or before this time (ISO 8601 or epoch seconds).
    #[arg(long)]
    pub end_time: Option<String>,
    /// `insight`: CloudTrail Insights events instead of management events.
    #[arg(long)]
    pub event_category: Option<String>,
    /// Page size, 1-50; turns off automatic paging.
    #[arg(long)]
    pub max_results: Option<u32>,
    /// Continue from a previous answer's NextToken; turns off automatic paging.
    #[arg(long)]
    pub next_token: Option<String>,
    /// The collector's URL.
    #[arg(long, default_value = "http://127.0.0.1:7480")]
    pub endpoint_url: String,
    /// Only this region's events, as with the AWS CLI (the signature scope's region; default
    /// `AWS_DEFAULT_REGION`, else us-east-1).
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// CA bundle (PEM) to verify an https endpoint.
    #[arg(long)]
    pub ca_bundle: Option<PathBuf>,
}

/// Parses `AttributeKey=K,AttributeValue=V` (shorthand syntax) or the JSON form.
fn parse_attribute(s: &str) -> anyhow::Result<Value> {
    if s.trim_start().starts_with('{') {
        return serde_json::from_str(s).context("--lookup-attributes JSON");
    }
    let (mut key, mut value) = (None, None);
    let rest = s;
    // AttributeValue may contain commas: split only at the first ",AttributeValue=" / key.
    if let Some(i) = rest.find("AttributeValue=") {
        let (before, after) = rest.split_at(i);
        value = Some(after["AttributeValue=".len()..].to_string());
        for part in before.split(',') {
            if let Some(k) = part.strip_prefix("AttributeKey=") {
                key = Some(k.to_string());
            }
        }
        if key.is_none()
            && let Some((v, k)) = value.clone().and_then(|v| {
                v.split_once(",AttributeKey=")
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
        {
            value = Some(v);
            key = Some(k);
        }
    }
    match (key, value) {
        (Some(k), Some(v)) => Ok(json!({"AttributeKey": k, "AttributeValue": v})),
        _ => bail!("--lookup-attributes {s:?}: expected AttributeKey=<key>,AttributeValue=<value>"),
    }
}

/// ISO 8601 (`2026-11-21T10:00:00Z`, with offset, or a date) or epoch seconds.
pub(crate) fn parse_time(s: &str) -> anyhow::Result<f64> {
    if let Ok(n) = s.parse::<f64>() {
        return Ok(n);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp() as f64);
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), fmt) {
            return Ok(t.and_utc().timestamp() as f64);
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp())
            .unwrap_or(0) as f64);
    }
    bail!("{s:?} is not a time (ISO 8601 or epoch seconds)")
}

/// Runs the command; returns the exit code (0, or 255 for an API error as the AWS CLI does).
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let mut input = Map::new();
    if !args.lookup_attributes.is_empty() {
        let list: anyhow::Result<Vec<Value>> = args
            .lookup_attributes
            .iter()
            .map(|a| parse_attribute(a))
            .collect();
        input.insert("LookupAttributes".into(), Value::Array(list?));
    }
    if let Some(t) = &args.start_time {
        input.insert("StartTime".into(), json!(parse_time(t)?));
    }
    if let Some(t) = &args.end_time {
        input.insert("EndTime".into(), json!(parse_time(t)?));
    }
    if let Some(c) = &args.event_category {
        input.insert("EventCategory".into(), json!(c));
    }
    if let Some(n) = args.max_results {
        input.insert("MaxResults".into(), json!(n));
    }
    if let Some(t) = &args.next_token {
        input.insert("NextToken".into(), json!(t));
    }
    let client = Client::new(
        &args.endpoint_url,
        args.region.clone(),
        args.ca_bundle.as_deref(),
    )?;
    // Like the AWS CLI: every page, merged, unless the caller asked for one page.
    let pages = (args.max_results.is_none() && args.next_token.is_none()).then_some("Events");
    let target = format!("{}LookupEvents", crate::api::TARGET_PREFIX);
    client
        .call_and_print(&target, "LookupEvents", input, pages)
        .await
}

/// JSON as the AWS CLI prints it (4-space indent).
fn pretty(v: &Value) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    let _ = v.serialize(&mut ser);
    String::from_utf8_lossy(&out).into_owned()
}

/// A SigV4-signing client of the collector's API, shared by the CLI commands that call it.
pub(crate) struct Client {
    uri: http::Uri,
    region: String,
    credentials: Option<(String, String)>,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Client {
    /// A client of the API at `endpoint_url`; `region` as the AWS CLI's `--region`.
    pub(crate) fn new(
        endpoint_url: &str,
        region: Option<String>,
        ca_bundle: Option<&std::path::Path>,
    ) -> anyhow::Result<Client> {
        let uri: http::Uri = endpoint_url
            .parse()
            .with_context(|| format!("--endpoint-url {endpoint_url:?}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => None,
            Some("https") => {
                let ca = ca_bundle
                    .context("an https endpoint needs --ca-bundle (the collector's CA)")?;
                Some(groundtrail_common::tls::client_config(ca, None)?)
            }
            _ => bail!("--endpoint-url must be http:// or https://"),
        };
        let region = region
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        let credentials = match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(k), Ok(s)) if !k.is_empty() && !s.is_empty() => Some((k, s)),
            _ => None,
        };
        Ok(Client {
            uri,
            region,
            credentials,
            tls,
        })
    }

    /// Calls the operation `target` names (`op` in messages) and prints the answer as the AWS
    /// CLI does; returns the exit code (0, or 255 for an API error). With `pages` (the answer's
    /// list member), follows `NextToken` and prints every page's items merged.
    pub(crate) async fn call_and_print(
        &self,
        target: &str,
        op: &str,
        mut input: Map<String, Value>,
        pages: Option<&str>,
    ) -> anyhow::Result<u8> {
        let mut all = Vec::new();
        let output = loop {
            let (status, body) = self
                .call_target(target, &Value::Object(input.clone()))
                .await?;
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if status != 200 {
                let code = v["__type"].as_str().unwrap_or("Unknown");
                let code = code.rsplit('#').next().unwrap_or(code);
                let message = v["message"]
                    .as_str()
                    .or(v["Message"].as_str())
                    .unwrap_or_default();
                eprintln!(
                    "\nAn error occurred ({code}) when calling the {op} operation: {message}"
                );
                return Ok(255);
            }
            let Some(list) = pages else { break v };
            all.extend(v[list].as_array().cloned().unwrap_or_default());
            match v["NextToken"].as_str() {
                Some(t) => {
                    input.insert("NextToken".into(), json!(t));
                }
                None => break json!({ list: all }),
            }
        };
        println!("{}", pretty(&output));
        Ok(0)
    }

    /// Calls the operation `target` names (`X-Amz-Target`); the HTTP status and the body.
    pub(crate) async fn call_target(
        &self,
        target: &str,
        input: &Value,
    ) -> anyhow::Result<(u16, Bytes)> {
        let body = serde_json::to_vec(input)?;
        let host = self
            .uri
            .authority()
            .context("--endpoint-url has no host")?
            .as_str()
            .to_string();
        let target = target.to_string();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host.clone()),
            ("content-type".into(), "application/x-amz-json-1.1".into()),
            ("x-amz-target".into(), target),
        ];
        if let Some((key, secret)) = &self.credentials {
            let borrowed: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let signed = crate::sigv4::sign_request(
                "POST",
                "/",
                &borrowed,
                &body,
                &self.region,
                "cloudtrail",
                key,
                secret,
                SystemTime::now(),
            )
            .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
            headers.extend(signed);
        } else {
            headers.push((crate::api::REGION_HEADER.into(), self.region.clone()));
        }
        let mut req = http::Request::post("/");
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let port = self
            .uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let h = self.uri.host().unwrap_or("127.0.0.1");
        let tcp = tokio::net::TcpStream::connect((h.trim_matches(['[', ']']), port))
            .await
            .with_context(|| format!("cannot connect to {host}"))?;
        let resp = match &self.tls {
            None => {
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                sender.send_request(req).await?
            }
            Some(config) => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let name = rustls_pki_types::ServerName::try_from(h.to_string())?;
                let stream = connector.connect(name, tcp).await?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                sender.send_request(req).await?
            }
        };
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_and_times() {
        assert_eq!(
            parse_attribute("AttributeKey=Username,AttributeValue=alice").unwrap(),
            json!({"AttributeKey": "Username", "AttributeValue": "alice"})
        );
        assert_eq!(
            parse_attribute("AttributeKey=ResourceName,AttributeValue=a,b").unwrap()["AttributeValue"],
            "a,b"
        );
        assert_eq!(
            parse_attribute("AttributeValue=x,AttributeKey=EventName").unwrap(),
            json!({"AttributeKey": "EventName", "AttributeValue": "x"})
        );
        assert!(parse_attribute("Username=alice").is_err());
        assert_eq!(parse_time("1800000000").unwrap(), 1_800_000_000.0);
        assert_eq!(
            parse_time("2027-01-15T08:00:00Z").unwrap(),
            parse_time("2027-01-15T08:00:00+00:00").unwrap()
        );
        assert!(parse_time("2027-01-15").is_ok());
        assert!(parse_time("yesterday").is_err());
    }
}
