//! The console's event query: any combination of filters over the event history, newest
//! first, a page at a time.
//!
//! Guarantees (tested below):
//! - **One index, the rest filtered.** The history indexes one attribute per lookup (see
//!   [`crate::history`]). The query reads the index of the most selective attribute it has
//!   (in the order of [`INDEX_ORDER`]: an event id, a resource name, an access key, a user,
//!   an event name, a resource type, an event source, read-only), else the time index of the
//!   region, and checks every other filter on each event it reads. So the rows are exactly
//!   the events that match all filters, newest first, whatever attribute was picked.
//! - **A budget per page.** A page reads at most `budget.events` events from the history, and
//!   stops reading once `budget.time` is spent (checked every [`MAX_SLICE`] events). When the
//!   filters are sparse over a large range, the page comes back with fewer rows (maybe none)
//!   and a continuation token, instead of reading the whole range: the time a page takes
//!   depends on the page size and the budget, not on the history's size. Where it stopped
//!   changes nothing but the page boundaries: following the tokens still visits every
//!   matching event once.
//! - **Tokens.** A continuation token holds the history position after the last event
//!   *read* (not returned), the frozen end time (so later events do not shift the pages) and
//!   a hash of the filters: a token used with other filters is refused. Following tokens
//!   visits every matching event exactly once.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use base64::Engine;
use groundtrail_common::percent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::history::{Attribute, History, HistoryError, Query, Summary};

/// Event ids, resource names, access keys and users are usually rare; event names, resource
/// types and sources less so; read-only splits the history in two.
pub const INDEX_ORDER: [Attribute; 8] = [
    Attribute::EventId,
    Attribute::ResourceName,
    Attribute::AccessKeyId,
    Attribute::Username,
    Attribute::EventName,
    Attribute::ResourceType,
    Attribute::EventSource,
    Attribute::ReadOnly,
];

/// What one page may spend reading the history (see the module's guarantees): a page ends
/// at whichever runs out first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Events read at most.
    pub events: usize,
    /// Time spent reading, checked between slices of at most [`MAX_SLICE`] events.
    pub time: Duration,
}

impl Budget {
    /// A budget of `events` and no practical time limit (tests, exports that count events).
    pub const fn events(events: usize) -> Budget {
        Budget {
            events,
            time: Duration::from_secs(3600),
        }
    }
}

/// A console page's budget: 20,000 events or 200 ms of reading, whichever comes first, so a
/// first page answers within the console's 300 ms goal on any history and any machine (the
/// event count bounds the work where the machine is fast, the time where it is slow or busy).
pub const DEFAULT_BUDGET: Budget = Budget {
    events: 20_000,
    time: Duration::from_millis(200),
};
/// Events read per history lookup at most: the granularity of the time budget.
pub const MAX_SLICE: usize = 256;
/// Largest page.
pub const MAX_PAGE: usize = 500;

/// Which events: management events or Insights records (the history keeps both apart, as
/// `LookupEvents` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Category {
    #[default]
    Management,
    Insight,
}

/// Every filter the console offers; `None` is "any". Values match exactly.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Filters {
    /// Inclusive, epoch seconds. No start: the whole retention; no end: now (frozen in the
    /// continuation token).
    pub start: Option<u64>,
    pub end: Option<u64>,
    pub event_id: Option<String>,
    pub event_name: Option<String>,
    pub event_source: Option<String>,
    /// CloudTrail's `Username` (see [`crate::history::summarize`]).
    pub username: Option<String>,
    pub access_key_id: Option<String>,
    pub source_ip: Option<String>,
    pub error_code: Option<String>,
    /// Any of the event's resources has this name (ARN) ...
    pub resource_name: Option<String>,
    /// ... / this type.
    pub resource_type: Option<String>,
    pub read_only: Option<bool>,
    pub category: Category,
    /// `recipientAccountId`.
    pub account: Option<String>,
    /// `awsRegion`.
    pub region: Option<String>,
}

/// Why a query was refused.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error("the continuation token was not issued for these filters")]
    Token,
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// The fields of a record the history's summary does not hold, read for filters and rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Extra {
    pub source_ip: Option<String>,
    pub error_code: Option<String>,
    pub account: Option<String>,
    pub event_type: Option<String>,
}

#[derive(Deserialize)]
struct ExtraRaw<'a> {
    #[serde(rename = "sourceIPAddress", borrow, default)]
    source_ip: Option<Cow<'a, str>>,
    #[serde(rename = "errorCode", borrow, default)]
    error_code: Option<Cow<'a, str>>,
    #[serde(rename = "recipientAccountId", borrow, default)]
    account: Option<Cow<'a, str>>,
    #[serde(rename = "eventType", borrow, default)]
    event_type: Option<Cow<'a, str>>,
}

impl Extra {
    /// Reads the fields from the record's JSON; the other members are skipped, not built.
    /// A record where one of them is not a string is read through `Value` (a non-string
    /// reads as absent, as the history's summary does).
    pub fn read(json: &[u8]) -> Extra {
        let s = |v: Option<Cow<'_, str>>| v.map(Cow::into_owned).filter(|s| !s.is_empty());
        match serde_json::from_slice::<ExtraRaw>(json) {
            Ok(r) => Extra {
                source_ip: s(r.source_ip),
                error_code: s(r.error_code),
                account: s(r.account),
                event_type: s(r.event_type),
            },
            Err(_) => {
                let v: Value = serde_json::from_slice(json).unwrap_or(Value::Null);
                let f = |k: &str| {
                    v.get(k)
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                };
                Extra {
                    source_ip: f("sourceIPAddress"),
                    error_code: f("errorCode"),
                    account: f("recipientAccountId"),
                    event_type: f("eventType"),
                }
            }
        }
    }
}

/// One row of a page: what the history summarises, the extra fields, and the record.
#[derive(Debug, Clone)]
pub struct Row {
    pub summary: Summary,
    pub extra: Extra,
    pub json: Vec<u8>,
}

/// One page of a query.
#[derive(Debug, Clone)]
pub struct Page {
    pub rows: Vec<Row>,
    /// Where to go on; `None`: the range is exhausted.
    pub next: Option<String>,
    /// Events read from the history for this page.
    pub scanned: usize,
    /// The budget ran out before the page was full: more may match further back.
    pub partial: bool,
    /// The attribute whose index was read (`None`: the time index).
    pub index: Option<Attribute>,
}

fn eq(want: &Option<String>, have: Option<&str>) -> bool {
    want.as_deref().is_none_or(|w| have == Some(w))
}

impl Filters {
    /// The filters whose values the history's summary holds, and whether they match.
    fn matches_summary(&self, s: &Summary) -> bool {
        eq(&self.event_id, Some(&s.event_id))
            && eq(&self.event_name, s.event_name.as_deref())
            && eq(&self.event_source, s.event_source.as_deref())
            && eq(&self.username, s.username.as_deref())
            && eq(&self.access_key_id, s.access_key_id.as_deref())
            && eq(&self.region, s.region.as_deref())
            && self
                .read_only
                .is_none_or(|r| s.read_only.as_deref() == Some(if r { "true" } else { "false" }))
            && self.resource_name.as_deref().is_none_or(|n| {
                s.resources
                    .iter()
                    .any(|(_, name)| name.as_deref() == Some(n))
            })
            && self
                .resource_type
                .as_deref()
                .is_none_or(|t| s.resources.iter().any(|(ty, _)| ty.as_deref() == Some(t)))
            && (s.insight == (self.category == Category::Insight))
    }

    fn matches_extra(&self, e: &Extra) -> bool {
        eq(&self.source_ip, e.source_ip.as_deref())
            && eq(&self.error_code, e.error_code.as_deref())
            && eq(&self.account, e.account.as_deref())
    }

    /// The (attribute, value) whose index the query reads; `None`: the time index.
    pub fn index(&self) -> Option<(Attribute, String)> {
        for a in INDEX_ORDER {
            if self.category == Category::Insight
                && !matches!(
                    a,
                    Attribute::EventId | Attribute::EventName | Attribute::EventSource
                )
            {
                continue;
            }
            let v = match a {
                Attribute::EventId => self.event_id.clone(),
                Attribute::ResourceName => self.resource_name.clone(),
                Attribute::AccessKeyId => self.access_key_id.clone(),
                Attribute::Username => self.username.clone(),
                Attribute::EventName => self.event_name.clone(),
                Attribute::ResourceType => self.resource_type.clone(),
                Attribute::EventSource => self.event_source.clone(),
                Attribute::ReadOnly => self.read_only.map(|b| b.to_string()),
            };
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                return Some((a, v));
            }
        }
        None
    }

    /// A hash of the filters without the end (which the token freezes): what binds a token.
    fn binding(&self) -> String {
        let mut f = self.clone();
        f.end = None;
        let text = serde_json::to_string(&f).unwrap_or_default();
        hex::encode(
            &aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref()[..12],
        )
    }

    /// Reads the filters from a URL query string (`name=value&...`, percent-encoded); empty
    /// values are "any". Unknown names are refused, so a misspelt filter is not silently
    /// ignored.
    pub fn from_query(query: &str) -> Result<(Filters, Params), QueryError> {
        let mut f = Filters::default();
        let mut p = Params::default();
        for (k, v) in parse_query(query) {
            if v.is_empty() {
                continue;
            }
            let time = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| QueryError::Invalid(format!("{k} must be epoch seconds")))
            };
            match k.as_str() {
                "start" => f.start = Some(time(&v)?),
                "end" => f.end = Some(time(&v)?),
                "eventId" => f.event_id = Some(v),
                "eventName" => f.event_name = Some(v),
                "eventSource" => f.event_source = Some(v),
                "username" => f.username = Some(v),
                "accessKeyId" => f.access_key_id = Some(v),
                "sourceIp" => f.source_ip = Some(v),
                "errorCode" => f.error_code = Some(v),
                "resourceName" => f.resource_name = Some(v),
                "resourceType" => f.resource_type = Some(v),
                "readOnly" => {
                    f.read_only = Some(match v.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(QueryError::Invalid("readOnly is true or false".into())),
                    })
                }
                "category" => {
                    f.category = match v.as_str() {
                        "management" => Category::Management,
                        "insight" => Category::Insight,
                        _ => {
                            return Err(QueryError::Invalid(
                                "category is management or insight".into(),
                            ));
                        }
                    }
                }
                "account" => f.account = Some(v),
                "region" => f.region = Some(v),
                "limit" => {
                    p.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| QueryError::Invalid(format!("limit is 1-{MAX_PAGE}")))?
                }
                "token" => p.token = Some(v),
                "window" => p.window = Some(time(&v)?),
                "id" => p.id = Some(v),
                _ => return Err(QueryError::Invalid(format!("unknown parameter {k:?}"))),
            }
        }
        if let (Some(s), Some(e)) = (f.start, f.end)
            && s > e
        {
            return Err(QueryError::Invalid("start is after end".into()));
        }
        Ok((f, p))
    }
}

/// The request's parameters besides the filters.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub limit: usize,
    pub token: Option<String>,
    /// For related events: seconds either side.
    pub window: Option<u64>,
    /// For one event: its id.
    pub id: Option<String>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            limit: 50,
            token: None,
            window: None,
            id: None,
        }
    }
}

/// `a=b&c=d` with `+` and `%XX` decoded.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent::decode_query(k), percent::decode_query(v))
        })
        .collect()
}

#[derive(Serialize, Deserialize)]
struct Token {
    /// Hex of the history position after the last event read.
    a: String,
    /// The frozen end.
    e: u64,
    /// [`Filters::binding`].
    b: String,
}

/// Runs one page of `filters`: at most `limit` rows, within `budget`.
/// `now` and `retention` give the default range.
pub fn page(
    history: &History,
    filters: &Filters,
    limit: usize,
    token: Option<&str>,
    budget: Budget,
    now: u64,
    retention: u64,
) -> Result<Page, QueryError> {
    let began = Instant::now();
    let binding = filters.binding();
    let (end, mut after) = match token {
        Some(t) => {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .map_err(|_| QueryError::Token)?;
            let t: Token = serde_json::from_slice(&raw).map_err(|_| QueryError::Token)?;
            if t.b != binding {
                return Err(QueryError::Token);
            }
            (t.e, Some(hex::decode(&t.a).map_err(|_| QueryError::Token)?))
        }
        None => (filters.end.unwrap_or(now), None),
    };
    let start = filters.start.unwrap_or(now.saturating_sub(retention));
    let index = filters.index();
    let mut out = Page {
        rows: Vec::new(),
        next: None,
        scanned: 0,
        partial: false,
        index: index.as_ref().map(|(a, _)| *a),
    };
    let limit = limit.clamp(1, MAX_PAGE);
    let (budget, deadline) = (budget.events.max(1), budget.time);
    // Read in slices: a history lookup costs a few key-range seeks to set up, so a slice
    // is not one event, but not so large that a sparse page reads far past its budget.
    let slice = (limit * 2).clamp(64, MAX_SLICE);
    let mut exhausted = false;
    let mut resume: Option<Vec<u8>> = None;
    'read: while out.scanned < budget {
        let q = Query {
            attribute: index.clone(),
            start,
            end,
            max_results: slice.min(budget - out.scanned),
            after: after.clone(),
            region: filters.region.clone(),
            insight: filters.category == Category::Insight,
        };
        let got = history.lookup(&q)?;
        let event_id_lookup = matches!(index, Some((Attribute::EventId, _)));
        let n = got.events.len();
        for (i, (summary, json)) in got.events.into_iter().enumerate() {
            out.scanned += 1;
            let position = got.positions.get(i).map(|p| p.to_vec());
            // The record's other fields are read only for events that pass the summary's
            // filters, and once.
            let extra = filters
                .matches_summary(&summary)
                .then(|| Extra::read(&json))
                .filter(|e| filters.matches_extra(e));
            if let Some(extra) = extra {
                out.rows.push(Row {
                    summary,
                    extra,
                    json,
                });
            }
            resume = position;
            if out.rows.len() == limit {
                // Full: go on after this event, if anything may follow it.
                let more = i + 1 < n || got.next.is_some();
                if !more {
                    exhausted = true;
                }
                break 'read;
            }
        }
        if event_id_lookup || got.next.is_none() {
            exhausted = true;
            break;
        }
        after = got.next.clone();
        resume = got.next;
        if began.elapsed() >= deadline {
            break;
        }
    }
    if !exhausted && let Some(a) = resume {
        out.partial = out.rows.len() < limit;
        let t = Token {
            a: hex::encode(a),
            e: end,
            b: binding,
        };
        out.next = Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&t).unwrap_or_default()),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: u64 = 1_800_000_000;

    fn record(i: usize) -> Value {
        let user = ["alice", "bob", "carol"][i % 3];
        let ip = if i.is_multiple_of(5) {
            "198.51.100.7"
        } else {
            "192.0.2.10"
        };
        let mut r = json!({
            "eventVersion": "1.08",
            "eventID": format!("00000000-0000-4000-8000-{i:012}"),
            "eventTime": groundtrail_common::time::json_time(
                chrono::DateTime::from_timestamp((T0 + i as u64) as i64, 0).unwrap()),
            "eventName": if i.is_multiple_of(2) { "ConsoleLogin" } else { "RunCommand" },
            "eventSource": if i.is_multiple_of(2) { "sshd.onprem.internal" } else { "sudo.onprem.internal" },
            "awsRegion": if i % 4 == 3 { "eu-west-1" } else { "us-east-1" },
            "recipientAccountId": if i.is_multiple_of(7) { "210987654321" } else { "123456789012" },
            "sourceIPAddress": ip,
            "userIdentity": {"type": "IAMUser", "userName": user},
            "readOnly": i % 3 == 1,
            "eventType": "AwsApiCall",
            "managementEvent": true,
            "eventCategory": "Management",
            "resources": [{"type": "AWS::EC2::Instance", "ARN": format!("arn:host/{}", i % 4)}],
        });
        if i.is_multiple_of(6) {
            r["errorCode"] = json!("AccessDenied");
        }
        r
    }

    fn history(n: usize) -> (tempfile::TempDir, History, Vec<Value>) {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("h")).unwrap();
        let records: Vec<Value> = (0..n).map(record).collect();
        let jsons: Vec<Vec<u8>> = records
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap())
            .collect();
        h.insert(jsons.iter().map(|j| j.as_slice()), 0).unwrap();
        (dir, h, records)
    }

    /// The expected answer: the records matching `f`, newest first (eventTime, then the
    /// insertion order reversed — every record here has its own second).
    fn expected(records: &[Value], f: impl Fn(&Value) -> bool) -> Vec<String> {
        let mut v: Vec<&Value> = records.iter().filter(|r| f(r)).collect();
        v.reverse();
        v.iter()
            .map(|r| r["eventID"].as_str().unwrap().to_string())
            .collect()
    }

    /// Every page of a query, following tokens: (ids, pages).
    fn all(h: &History, f: &Filters, limit: usize, budget: usize) -> (Vec<String>, Vec<Page>) {
        let mut ids = Vec::new();
        let mut pages = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let p = page(
                h,
                f,
                limit,
                token.as_deref(),
                Budget::events(budget),
                T0 + 10_000,
                1 << 40,
            )
            .unwrap();
            ids.extend(p.rows.iter().map(|r| r.summary.event_id.clone()));
            token = p.next.clone();
            pages.push(p);
            if token.is_none() {
                return (ids, pages);
            }
            assert!(pages.len() < 10_000, "paging does not end");
        }
    }

    #[test]
    fn combined_filters_return_exactly_the_matching_events_newest_first() {
        let (_d, h, records) = history(600);
        type Expect = Box<dyn Fn(&Value) -> bool>;
        let cases: Vec<(Filters, Expect)> = vec![
            (
                Filters {
                    username: Some("alice".into()),
                    source_ip: Some("198.51.100.7".into()),
                    ..Filters::default()
                },
                Box::new(|r| {
                    r["userIdentity"]["userName"] == "alice"
                        && r["sourceIPAddress"] == "198.51.100.7"
                }),
            ),
            (
                Filters {
                    event_name: Some("ConsoleLogin".into()),
                    error_code: Some("AccessDenied".into()),
                    region: Some("us-east-1".into()),
                    ..Filters::default()
                },
                Box::new(|r| {
                    r["eventName"] == "ConsoleLogin"
                        && r.get("errorCode").is_some()
                        && r["awsRegion"] == "us-east-1"
                }),
            ),
            (
                Filters {
                    resource_name: Some("arn:host/2".into()),
                    read_only: Some(true),
                    account: Some("123456789012".into()),
                    start: Some(T0 + 100),
                    end: Some(T0 + 400),
                    ..Filters::default()
                },
                Box::new(|r| {
                    let i: u64 = r["eventID"].as_str().unwrap()[24..].parse().unwrap();
                    r["resources"][0]["ARN"] == "arn:host/2"
                        && r["readOnly"] == true
                        && r["recipientAccountId"] == "123456789012"
                        && (100..=400).contains(&i)
                }),
            ),
            (
                Filters {
                    event_source: Some("sudo.onprem.internal".into()),
                    resource_type: Some("AWS::EC2::Instance".into()),
                    username: Some("bob".into()),
                    ..Filters::default()
                },
                Box::new(|r| {
                    r["eventSource"] == "sudo.onprem.internal"
                        && r["userIdentity"]["userName"] == "bob"
                }),
            ),
        ];
        for (f, want) in cases {
            let expect = expected(&records, &want);
            assert!(!expect.is_empty(), "{f:?} matches something");
            for limit in [1, 7, 50, 500] {
                let (ids, _) = all(&h, &f, limit, DEFAULT_BUDGET.events);
                assert_eq!(ids, expect, "{f:?}, pages of {limit}");
            }
        }
    }

    #[test]
    fn the_most_selective_indexed_attribute_is_read() {
        let f = Filters {
            event_name: Some("x".into()),
            username: Some("alice".into()),
            source_ip: Some("1.2.3.4".into()),
            ..Filters::default()
        };
        assert_eq!(f.index(), Some((Attribute::Username, "alice".into())));
        let f = Filters {
            source_ip: Some("1.2.3.4".into()),
            ..Filters::default()
        };
        assert_eq!(f.index(), None);
        let f = Filters {
            username: Some("alice".into()),
            event_source: Some("s".into()),
            category: Category::Insight,
            ..Filters::default()
        };
        assert_eq!(f.index(), Some((Attribute::EventSource, "s".into())));
    }

    #[test]
    fn a_sparse_filter_returns_partial_pages_within_the_budget_and_misses_nothing() {
        let (_d, h, records) = history(1000);
        // One event in 1000 has this IP, and source IPs are not indexed: the time index is read.
        let f = Filters {
            source_ip: Some("203.0.113.99".into()),
            ..Filters::default()
        };
        let none = all(&h, &f, 10, 100);
        assert!(none.0.is_empty());
        assert!(none.1.iter().all(|p| p.scanned <= 100));
        assert!(none.1.len() >= 10, "1000 events at 100 a page");
        assert!(none.1[..none.1.len() - 1].iter().all(|p| p.partial));

        let f = Filters {
            source_ip: Some("198.51.100.7".into()),
            ..Filters::default()
        };
        let expect = expected(&records, |r| r["sourceIPAddress"] == "198.51.100.7");
        for (limit, budget) in [(10, 33), (3, 64), (50, 1), (500, 1000)] {
            let (ids, pages) = all(&h, &f, limit, budget);
            assert_eq!(ids, expect, "limit {limit}, budget {budget}");
            assert!(
                pages
                    .iter()
                    .all(|p| p.scanned <= budget && p.rows.len() <= limit)
            );
            assert!(pages.iter().all(|p| p.index.is_none()));
        }
    }

    #[test]
    fn a_token_is_bound_to_its_filters_and_freezes_the_end() {
        let (_d, h, _) = history(100);
        let f = Filters {
            username: Some("alice".into()),
            ..Filters::default()
        };
        let p = page(&h, &f, 5, None, DEFAULT_BUDGET, T0 + 10_000, 1 << 40).unwrap();
        let token = p.next.unwrap();
        let other = Filters {
            username: Some("bob".into()),
            ..Filters::default()
        };
        assert!(matches!(
            page(
                &h,
                &other,
                5,
                Some(&token),
                DEFAULT_BUDGET,
                T0 + 10_000,
                1 << 40
            ),
            Err(QueryError::Token)
        ));
        assert!(matches!(
            page(&h, &f, 5, Some("garbage"), DEFAULT_BUDGET, T0, 1 << 40),
            Err(QueryError::Token)
        ));
        // A later "now" does not move the pages: the end is in the token.
        let a = page(
            &h,
            &f,
            5,
            Some(&token),
            DEFAULT_BUDGET,
            T0 + 10_000,
            1 << 40,
        )
        .unwrap();
        let b = page(
            &h,
            &f,
            5,
            Some(&token),
            DEFAULT_BUDGET,
            T0 + 99_999,
            1 << 40,
        )
        .unwrap();
        let ids = |p: &Page| {
            p.rows
                .iter()
                .map(|r| r.summary.event_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
    }

    #[test]
    fn query_strings() {
        let (f, p) = Filters::from_query(
            "username=al%20ice&sourceIp=1.2.3.4&readOnly=false&start=10&end=20&limit=7&eventName=",
        )
        .unwrap();
        assert_eq!(f.username.as_deref(), Some("al ice"));
        assert_eq!(f.source_ip.as_deref(), Some("1.2.3.4"));
        assert_eq!(f.read_only, Some(false));
        assert_eq!((f.start, f.end), (Some(10), Some(20)));
        assert_eq!(f.event_name, None);
        assert_eq!(p.limit, 7);
        assert!(Filters::from_query("usrname=x").is_err());
        assert!(Filters::from_query("start=20&end=10").is_err());
        assert!(Filters::from_query("limit=0").is_err());
        assert_eq!(percent::decode_query("a+b%2Fc%zz%4"), "a b/c%zz%4");
    }
}
