//! Reading a record for the history: the fields it is indexed and listed by, parsed borrowed
//! and leniently from its JSON (a member of an unexpected type is treated as absent, never as
//! an error: the history must index whatever the trail holds).

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::layout::INSIGHT;

/// The eight lookup attributes of `LookupEvents`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribute {
    EventId = 1,
    EventName = 2,
    ReadOnly = 3,
    Username = 4,
    ResourceType = 5,
    ResourceName = 6,
    EventSource = 7,
    AccessKeyId = 8,
}

impl Attribute {
    /// Parses the API's `AttributeKey`.
    pub fn parse(key: &str) -> Option<Attribute> {
        Some(match key {
            "EventId" => Attribute::EventId,
            "EventName" => Attribute::EventName,
            "ReadOnly" => Attribute::ReadOnly,
            "Username" => Attribute::Username,
            "ResourceType" => Attribute::ResourceType,
            "ResourceName" => Attribute::ResourceName,
            "EventSource" => Attribute::EventSource,
            "AccessKeyId" => Attribute::AccessKeyId,
            _ => return None,
        })
    }

    /// The API's `AttributeKey` for this attribute.
    pub fn name(self) -> &'static str {
        Attribute::ALL[self as usize - 1]
    }

    /// Every `AttributeKey`, in the order of the codes (1-8).
    pub const ALL: [&'static str; 8] = [
        "EventId",
        "EventName",
        "ReadOnly",
        "Username",
        "ResourceType",
        "ResourceName",
        "EventSource",
        "AccessKeyId",
    ];
}
/// What `LookupEvents` shows of an event, besides the record itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub event_id: String,
    pub event_name: Option<String>,
    pub read_only: Option<String>,
    pub access_key_id: Option<String>,
    pub event_time: u64,
    pub event_source: Option<String>,
    pub username: Option<String>,
    /// `(ResourceType, ResourceName)`.
    pub resources: Vec<(Option<String>, Option<String>)>,
    /// `awsRegion`: `LookupEvents` answers with one region's events, as AWS does.
    pub region: Option<String>,
    /// An Insights record (`EventCategory=insight`): its `event_name` and `event_source`
    /// are `insightDetails`', and it has no user, access key, `readOnly` or resources.
    pub insight: bool,
}

/// Whether a record of this `eventCategory` and `eventType` is an Insights record.
pub(super) fn is_insight(category: Option<&str>, event_type: Option<&str>) -> bool {
    category == Some("Insight") || event_type == Some("AwsCloudTrailInsight")
}

pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

/// Reads a record's lookup fields; `None` when it is not a history event (neither management
/// nor Insights, no `eventID`, no parseable `eventTime`). The reference for
/// [`summarize_json`], which reads the same from the JSON text without building a `Value`.
pub fn summarize(record: &Value) -> Option<Summary> {
    let category = record.get("eventCategory").and_then(Value::as_str);
    let event_type = record.get("eventType").and_then(Value::as_str);
    let insight = is_insight(category, event_type);
    let management = match category {
        Some(c) => c == "Management",
        None => record.get("managementEvent").and_then(Value::as_bool) != Some(false),
    };
    if !insight && !management {
        return None;
    }
    let event_id = str_at(record, &["eventID"])?.to_string();
    let time = str_at(record, &["eventTime"])?;
    let event_time =
        u64::try_from(groundtrail_common::time::parse_json_time(time)?.timestamp()).ok()?;
    if insight {
        let details = record.get("insightDetails").unwrap_or(&Value::Null);
        return Some(Summary {
            event_id,
            event_name: str_at(details, &["eventName"]).map(str::to_string),
            event_time,
            event_source: str_at(details, &["eventSource"]).map(str::to_string),
            region: str_at(record, &["awsRegion"]).map(str::to_string),
            insight: true,
            ..Summary::default()
        });
    }
    let ui = record.get("userIdentity").unwrap_or(&Value::Null);
    // CloudTrail's `Username`: the user name, else the session or principal name.
    let username = str_at(ui, &["userName"])
        .or_else(|| str_at(ui, &["sessionContext", "sessionIssuer", "userName"]))
        .or_else(|| str_at(ui, &["arn"]).and_then(|a| a.rsplit('/').next()))
        .or_else(|| str_at(ui, &["principalId"]))
        .map(str::to_string);
    let resources = record
        .get("resources")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|r| {
                    (
                        str_at(r, &["type"]).map(str::to_string),
                        str_at(r, &["ARN"]).map(str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Summary {
        event_id,
        event_name: str_at(record, &["eventName"]).map(str::to_string),
        read_only: record
            .get("readOnly")
            .and_then(Value::as_bool)
            .map(|b| b.to_string()),
        access_key_id: str_at(ui, &["accessKeyId"]).map(str::to_string),
        event_time,
        event_source: str_at(record, &["eventSource"]).map(str::to_string),
        username,
        resources,
        region: str_at(record, &["awsRegion"]).map(str::to_string),
        insight: false,
    })
}

/// [`summarize`] of a record's JSON text: only the lookup fields are read (borrowed where
/// unescaped), the rest is skipped. A record this cannot read (a duplicate field, say) is
/// read through `Value` instead, so both give the same answer for every record.
pub fn summarize_json(json: &[u8]) -> Option<Summary> {
    Fields::read(json).map(Fields::summary)
}

/// A JSON string; any other JSON value reads as `None` (as `Value::as_str` would).
#[derive(Default)]
pub(super) struct Str<'a>(Option<Cow<'a, str>>);

/// A JSON boolean; anything else reads as `None`.
#[derive(Default)]
pub(super) struct Flag(Option<bool>);

/// A JSON object read as `T`; anything else reads as `None`.
pub(super) struct Obj<T>(Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

/// A JSON array of (maybe) objects; anything else reads as empty.
pub(super) struct List<T>(Vec<Option<T>>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

/// The visitor shared by the lenient readers above: `on` says what to make of each kind of
/// JSON value; whatever it does not take is consumed and read as the default.
pub(super) struct Lenient<T>(PhantomData<T>);

pub(super) fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> std::result::Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

pub(super) fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> std::result::Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

macro_rules! lenient_scalars {
    ($t:ty) => {
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_unit<E>(self) -> std::result::Result<$t, E> {
            Ok(Default::default())
        }
        fn visit_none<E>(self) -> std::result::Result<$t, E> {
            Ok(Default::default())
        }
    };
}

impl<'de: 'a, 'a> Visitor<'de> for Lenient<Str<'a>> {
    type Value = Str<'a>;
    lenient_scalars!(Str<'a>);
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Str<'a>, E> {
        Ok(Str(None))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Str<'a>, E> {
        Ok(Str(Some(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Str<'a>, E> {
        Ok(Str(Some(Cow::Owned(v.to_string()))))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Str<'a>, E> {
        Ok(Str(Some(Cow::Owned(v))))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Str<'a>, A::Error> {
        skip_map(map).map(|_| Str(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Str<'a>, A::Error> {
        skip_seq(seq).map(|_| Str(None))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(Lenient::<Str<'a>>(PhantomData))
    }
}

impl<'de> Visitor<'de> for Lenient<Flag> {
    type Value = Flag;
    lenient_scalars!(Flag);
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Flag, E> {
        Ok(Flag(Some(v)))
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Flag, E> {
        Ok(Flag(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Flag, A::Error> {
        skip_map(map).map(|_| Flag(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Flag, A::Error> {
        skip_seq(seq).map(|_| Flag(None))
    }
}

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(Lenient::<Flag>(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Lenient<Obj<T>> {
    type Value = Obj<T>;
    lenient_scalars!(Obj<T>);
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Obj<T>, E> {
        Ok(Obj(None))
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Obj<T>, E> {
        Ok(Obj(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Obj<T>, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Obj<T>, A::Error> {
        skip_seq(seq).map(|_| Obj(None))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(Lenient::<Obj<T>>(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Lenient<List<T>> {
    type Value = List<T>;
    lenient_scalars!(List<T>);
    fn visit_bool<E>(self, _: bool) -> std::result::Result<List<T>, E> {
        Ok(List(Vec::new()))
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<List<T>, E> {
        Ok(List(Vec::new()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<List<T>, A::Error> {
        skip_map(map).map(|_| List(Vec::new()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<List<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(Obj(item)) = seq.next_element::<Obj<T>>()? {
            out.push(item);
        }
        Ok(List(out))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(Lenient::<List<T>>(PhantomData))
    }
}

/// The fields of a record [`summarize`] reads.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRecord<'a> {
    #[serde(rename = "eventCategory", borrow)]
    pub(super) event_category: Str<'a>,
    #[serde(rename = "managementEvent")]
    pub(super) management_event: Flag,
    #[serde(rename = "eventID", borrow)]
    pub(super) event_id: Str<'a>,
    #[serde(rename = "eventTime", borrow)]
    pub(super) event_time: Str<'a>,
    #[serde(rename = "eventName", borrow)]
    pub(super) event_name: Str<'a>,
    #[serde(rename = "eventSource", borrow)]
    pub(super) event_source: Str<'a>,
    #[serde(rename = "readOnly")]
    pub(super) read_only: Flag,
    #[serde(rename = "userIdentity", borrow)]
    pub(super) user_identity: Obj<RawIdentity<'a>>,
    #[serde(borrow)]
    pub(super) resources: List<RawResource<'a>>,
    #[serde(rename = "awsRegion", borrow)]
    pub(super) aws_region: Str<'a>,
    #[serde(rename = "eventType", borrow)]
    pub(super) event_type: Str<'a>,
    #[serde(rename = "insightDetails", borrow)]
    pub(super) insight_details: Obj<RawInsightDetails<'a>>,
}

/// The fields of an Insights record's `insightDetails` that it is looked up by.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawInsightDetails<'a> {
    #[serde(rename = "eventName", borrow)]
    pub(super) event_name: Str<'a>,
    #[serde(rename = "eventSource", borrow)]
    pub(super) event_source: Str<'a>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawIdentity<'a> {
    #[serde(rename = "userName", borrow)]
    pub(super) user_name: Str<'a>,
    #[serde(rename = "sessionContext", borrow)]
    pub(super) session_context: Obj<RawSession<'a>>,
    #[serde(borrow)]
    pub(super) arn: Str<'a>,
    #[serde(rename = "principalId", borrow)]
    pub(super) principal_id: Str<'a>,
    #[serde(rename = "accessKeyId", borrow)]
    pub(super) access_key_id: Str<'a>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawSession<'a> {
    #[serde(rename = "sessionIssuer", borrow)]
    pub(super) session_issuer: Obj<RawIssuer<'a>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawIssuer<'a> {
    #[serde(rename = "userName", borrow)]
    pub(super) user_name: Str<'a>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawResource<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Str<'a>,
    #[serde(rename = "ARN", borrow)]
    pub(super) arn: Str<'a>,
}

impl<'a> Str<'a> {
    /// The string if it is one and not empty (as `str_at`).
    pub(super) fn take(self) -> Option<Cow<'a, str>> {
        self.0.filter(|s| !s.is_empty())
    }
}

/// A record's lookup fields, borrowed from its JSON where they are not escaped: what an insert
/// needs (without a `String` per field), and what a [`Summary`] is made of.
pub(super) struct Fields<'a> {
    pub(super) event_id: Cow<'a, str>,
    pub(super) event_time: u64,
    pub(super) event_name: Option<Cow<'a, str>>,
    pub(super) read_only: Option<bool>,
    pub(super) access_key_id: Option<Cow<'a, str>>,
    pub(super) event_source: Option<Cow<'a, str>>,
    pub(super) username: Option<Cow<'a, str>>,
    /// `(ResourceType, ResourceName)`.
    pub(super) resources: Vec<(MaybeStr<'a>, MaybeStr<'a>)>,
    /// `awsRegion`.
    pub(super) region: Option<Cow<'a, str>>,
    /// An Insights record (see [`Summary::insight`]).
    pub(super) insight: bool,
}

pub(super) type MaybeStr<'a> = Option<Cow<'a, str>>;

/// The last `/`-separated part of an ARN, still borrowed if it was.
pub(super) fn arn_tail(arn: Cow<'_, str>) -> Cow<'_, str> {
    match arn {
        Cow::Borrowed(a) => Cow::Borrowed(a.rsplit('/').next().unwrap_or(a)),
        Cow::Owned(a) => Cow::Owned(a.rsplit('/').next().unwrap_or(&a).to_string()),
    }
}

impl<'a> Fields<'a> {
    /// Reads the JSON text (see [`summarize_json`]).
    pub(super) fn read(json: &'a [u8]) -> Option<Fields<'a>> {
        match serde_json::from_slice::<RawRecord>(json) {
            Ok(r) => r.fields(),
            Err(_) => summarize(&serde_json::from_slice::<Value>(json).ok()?).map(Fields::from),
        }
    }

    pub(super) fn summary(self) -> Summary {
        let owned = |v: Option<Cow<str>>| v.map(Cow::into_owned);
        Summary {
            event_id: self.event_id.into_owned(),
            event_name: owned(self.event_name),
            read_only: self.read_only.map(|b| b.to_string()),
            access_key_id: owned(self.access_key_id),
            event_time: self.event_time,
            event_source: owned(self.event_source),
            username: owned(self.username),
            resources: self
                .resources
                .into_iter()
                .map(|(t, n)| (owned(t), owned(n)))
                .collect(),
            region: owned(self.region),
            insight: self.insight,
        }
    }

    /// The region part of this event's index keys (`""` without `awsRegion`).
    pub(super) fn index_region(&self) -> &str {
        self.region.as_deref().unwrap_or("")
    }

    /// Every (attribute, value) this event is found by, including attribute 0; an Insights
    /// record's with [`INSIGHT`] set (it has only an event name and source).
    pub(super) fn index_values(&self) -> Vec<(u8, &str)> {
        if self.insight {
            let mut out = vec![(INSIGHT, "")];
            for (a, v) in [
                (Attribute::EventName, &self.event_name),
                (Attribute::EventSource, &self.event_source),
            ] {
                if let Some(v) = v {
                    out.push((INSIGHT | a as u8, v.as_ref()));
                }
            }
            out.retain(|(_, v)| !v.contains('\0'));
            return out;
        }
        // EventId is answered from `s/`, not from an index entry.
        let mut out = Vec::with_capacity(8 + 2 * self.resources.len());
        out.push((0u8, ""));
        if let Some(b) = self.read_only {
            out.push((Attribute::ReadOnly as u8, if b { "true" } else { "false" }));
        }
        for (a, v) in [
            (Attribute::EventName, &self.event_name),
            (Attribute::Username, &self.username),
            (Attribute::EventSource, &self.event_source),
            (Attribute::AccessKeyId, &self.access_key_id),
        ] {
            if let Some(v) = v {
                out.push((a as u8, v.as_ref()));
            }
        }
        for (t, n) in &self.resources {
            if let Some(t) = t {
                out.push((Attribute::ResourceType as u8, t.as_ref()));
            }
            if let Some(n) = n {
                out.push((Attribute::ResourceName as u8, n.as_ref()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out.retain(|(_, v)| !v.contains('\0'));
        out
    }
}

impl From<Summary> for Fields<'_> {
    fn from(s: Summary) -> Self {
        let cow = |v: Option<String>| v.map(Cow::Owned);
        Fields {
            event_id: Cow::Owned(s.event_id),
            event_time: s.event_time,
            event_name: cow(s.event_name),
            read_only: s.read_only.map(|r| r == "true"),
            access_key_id: cow(s.access_key_id),
            event_source: cow(s.event_source),
            username: cow(s.username),
            resources: s
                .resources
                .into_iter()
                .map(|(t, n)| (cow(t), cow(n)))
                .collect(),
            region: cow(s.region),
            insight: s.insight,
        }
    }
}

impl<'a> RawRecord<'a> {
    pub(super) fn fields(self) -> Option<Fields<'a>> {
        let insight = is_insight(
            self.event_category.0.as_deref(),
            self.event_type.0.as_deref(),
        );
        let management = match &self.event_category.0 {
            Some(c) => c == "Management",
            None => self.management_event.0 != Some(false),
        };
        if !insight && !management {
            return None;
        }
        let event_id = self.event_id.take()?;
        let time = self.event_time.take()?;
        let event_time =
            u64::try_from(groundtrail_common::time::parse_json_time(&time)?.timestamp()).ok()?;
        if insight {
            let (event_name, event_source) = match self.insight_details.0 {
                Some(d) => (d.event_name.take(), d.event_source.take()),
                None => (None, None),
            };
            return Some(Fields {
                event_id,
                event_time,
                event_name,
                read_only: None,
                access_key_id: None,
                event_source,
                username: None,
                resources: Vec::new(),
                region: self.aws_region.take(),
                insight: true,
            });
        }
        let (username, access_key_id) = match self.user_identity.0 {
            Some(u) => {
                let issuer = u
                    .session_context
                    .0
                    .and_then(|s| s.session_issuer.0)
                    .and_then(|i| i.user_name.take());
                let username = u
                    .user_name
                    .take()
                    .or(issuer)
                    .or_else(|| u.arn.take().map(arn_tail))
                    .or_else(|| u.principal_id.take());
                (username, u.access_key_id.take())
            }
            None => (None, None),
        };
        Some(Fields {
            event_id,
            event_time,
            event_name: self.event_name.take(),
            read_only: self.read_only.0,
            access_key_id,
            event_source: self.event_source.take(),
            username,
            resources: self
                .resources
                .0
                .into_iter()
                .map(|r| match r {
                    Some(r) => (r.kind.take(), r.arn.take()),
                    None => (None, None),
                })
                .collect(),
            region: self.aws_region.take(),
            insight: false,
        })
    }
}

/// (region, attribute, value) of one index posting list, borrowed from the inserted records.
pub(super) type PostingKey<'a> = (&'a str, u8, &'a str);
