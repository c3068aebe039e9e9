//! A trail's event selectors: which records the trail records, with CloudTrail's semantics.
//!
//! A [`Selectors`] value is always valid: it is only built by [`Selectors::from_api`] (a
//! `PutEventSelectors` body) or [`SelectorsConfig::to_selectors`] (the `[trail]` config, which
//! goes through the same checks, so the config and the API refuse the same things with the same
//! error), or is the default, [`Selectors::everything`]. [`Selectors::selects`] is a pure
//! function of the record: the same record is judged the same way on every call and after any
//! restart, which is what lets the integrator filter at commit time and again on replay.
//!
//! # Semantics (CloudTrail's, from the CloudTrail API reference: `PutEventSelectors`,
//! `EventSelector`, `DataResource`, `AdvancedEventSelector`, `AdvancedFieldSelector`)
//!
//! A trail records a record when **any** of its selectors takes it. Insights records
//! (`eventType` `AwsCloudTrailInsight`, or `eventCategory` `Insight`) are not judged here: the
//! trail's insight selectors govern them, so `selects` is always true for them.
//!
//! **Basic selectors** (`EventSelectors`, at most 5). A record is a *management event* when its
//! `eventCategory` is absent or `Management` and its `managementEvent` is not `false`; a *data
//! event* when its `eventCategory` is `Data`. Other categories (`ActivityAuditLog`,
//! `NetworkActivity`) are never taken by basic selectors, as on AWS where they need advanced
//! ones. `ReadWriteType` compares with `readOnly`: `ReadOnly` takes `readOnly: true`,
//! `WriteOnly` everything else (a record without `readOnly` counts as a write), `All` both.
//! - A management event is taken when `IncludeManagementEvents` is true, `ReadWriteType` fits
//!   and its `eventSource` is not in `ExcludeManagementEventSources`. AWS accepts only
//!   `kms.amazonaws.com` and `rdsdata.amazonaws.com` there; Groundtrail accepts any source
//!   (`sudo.<domain>` is as noisy on a host as KMS is on AWS).
//! - A data event is taken when `ReadWriteType` fits and one `DataResources` entry names one of
//!   the record's `resources[]`: its `Type` equals that resource's `type` and one of its
//!   `Values` matches that resource's `ARN`. For `AWS::S3::Object` a value is an ARN prefix
//!   (`arn:aws:s3` all objects, `arn:aws:s3:::bucket/` one bucket, `arn:aws:s3:::bucket/logs/`
//!   a prefix); for `AWS::Lambda::Function` and `AWS::DynamoDB::Table` a value is the exact
//!   ARN or the whole service (`arn:aws:lambda`, `arn:aws:dynamodb`). AWS allows no other type
//!   in basic selectors; Groundtrail accepts any `Type` (the sidecar writes the operator's own
//!   types, e.g. `Shop::Order`) and treats its values as ARN prefixes.
//!
//! **Advanced selectors** (`AdvancedEventSelectors`). Selectors are ORed; the field selectors of
//! one selector are ANDed. Within one field selector, the field matches when (a) one value of
//! one positive operator (`Equals`, `StartsWith`, `EndsWith`) matches — values and positive
//! operators are ORed; no positive operator means no such condition — and (b) every value of
//! every negative operator (`NotEquals`, `NotStartsWith`, `NotEndsWith`) holds — they are
//! ANDed, which is how "everything but my trail's own bucket" is written. Comparisons are
//! case-sensitive and literal (no wildcards), as on AWS.
//! - Fields: `eventCategory`, `eventSource`, `eventName`, `eventType`, `readOnly`,
//!   `resources.type`, `resources.ARN`, `userIdentity.arn`, `errorCode`,
//!   `sessionCredentialFromConsole`, `vpcEndpointId`. AWS allows some of them on trails only
//!   for some categories (the rest only on event data stores) and requires `eventCategory` in
//!   every selector; Groundtrail allows every field in every selector and does not require
//!   `eventCategory` (a selector without it applies to every category) — a superset that
//!   accepts every selector AWS accepts and judges it the same way.
//! - `eventCategory` of a record without one is `Management`; `readOnly` is `"true"` when the
//!   record's `readOnly` is true and `"false"` otherwise (so a record without it is a write,
//!   as for `ReadWriteType`). Booleans and numbers compare as their JSON text.
//! - A member the record lacks (or that is not a string, boolean or number): no positive
//!   operator matches it, and every negative operator holds (it equals nothing, so it differs
//!   from every value). AWS's documentation does not say; this is the reading under which
//!   `eventSource NotEquals kms.amazonaws.com` keeps every record that is not a KMS call.
//! - `resources.type` and `resources.ARN` are judged on one resource at a time: the selector
//!   matches when some entry of `resources[]` satisfies all of the selector's `resources.*`
//!   field selectors together (a record without resources is judged as one resource lacking
//!   both members). So `resources.type Equals AWS::S3::Object` with `resources.ARN
//!   NotStartsWith arn:aws:s3:::trail-bucket/` skips writes to the trail's bucket even though
//!   the same record also lists the bucket itself as an `AWS::S3::Bucket` resource.
//!
//! **The default.** See [`Selectors::everything`].
//!
//! # Validation
//!
//! Errors carry AWS's exception code, [`INVALID_EVENT_SELECTORS`] for everything AWS refuses
//! with it (counts, limits, values, both kinds at once — `PutEventSelectors` has no other code
//! for a bad combination), and [`SERIALIZATION`] for a member of the wrong JSON type, as AWS's
//! JSON protocol answers. Messages name the member (`EventSelectors[1].ReadWriteType`,
//! `AdvancedEventSelectors[0].FieldSelectors[2]`) and what would be accepted. See
//! [`from_api`](Selectors::from_api) for the limits.

mod api;
pub mod config;
mod matching;
#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

pub use config::{
    AdvancedEventSelectorConfig, DataResourceConfig, EventSelectorConfig, FieldSelectorConfig,
    SelectorsConfig,
};

/// AWS's code for selectors it refuses.
pub const INVALID_EVENT_SELECTORS: &str = "InvalidEventSelectorsException";
/// AWS's code for a request member of the wrong JSON type.
pub const SERIALIZATION: &str = "SerializationException";

/// A trail's validated event selectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Selectors {
    kind: Kind,
}

/// Why selectors were refused: AWS's error code and a message in AWS's words where known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SelectorError {
    /// `InvalidEventSelectorsException` or `SerializationException`.
    pub code: &'static str,
    /// What is wrong, naming the member.
    pub message: String,
}

impl SelectorError {
    fn invalid(message: impl Into<String>) -> SelectorError {
        SelectorError {
            code: INVALID_EVENT_SELECTORS,
            message: message.into(),
        }
    }

    fn serialization(message: impl Into<String>) -> SelectorError {
        SelectorError {
            code: SERIALIZATION,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// The default: every record.
    Everything,
    Basic(Vec<EventSelector>),
    Advanced(Vec<AdvancedSelector>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadWrite {
    ReadOnly,
    WriteOnly,
    All,
}

#[derive(Debug, Clone, PartialEq)]
struct EventSelector {
    read_write: ReadWrite,
    include_management: bool,
    data_resources: Vec<DataResource>,
    exclude_sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct DataResource {
    r#type: String,
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct AdvancedSelector {
    name: Option<String>,
    fields: Vec<FieldSelector>,
}

/// One field selector; each operator is `None` when absent, never an empty list.
#[derive(Debug, Clone, PartialEq)]
struct FieldSelector {
    field: Field,
    /// Indexed by [`Op`]: `Equals`, `StartsWith`, `EndsWith`, `NotEquals`, `NotStartsWith`,
    /// `NotEndsWith`.
    ops: [Option<Vec<String>>; 6],
}

/// The record members advanced selectors can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    EventCategory,
    EventSource,
    EventName,
    EventType,
    ReadOnly,
    ResourcesType,
    ResourcesArn,
    UserIdentityArn,
    ErrorCode,
    SessionCredentialFromConsole,
    VpcEndpointId,
}

impl Field {
    const ALL: [Field; 11] = [
        Field::EventCategory,
        Field::EventSource,
        Field::EventName,
        Field::EventType,
        Field::ReadOnly,
        Field::ResourcesType,
        Field::ResourcesArn,
        Field::UserIdentityArn,
        Field::ErrorCode,
        Field::SessionCredentialFromConsole,
        Field::VpcEndpointId,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::EventCategory => "eventCategory",
            Field::EventSource => "eventSource",
            Field::EventName => "eventName",
            Field::EventType => "eventType",
            Field::ReadOnly => "readOnly",
            Field::ResourcesType => "resources.type",
            Field::ResourcesArn => "resources.ARN",
            Field::UserIdentityArn => "userIdentity.arn",
            Field::ErrorCode => "errorCode",
            Field::SessionCredentialFromConsole => "sessionCredentialFromConsole",
            Field::VpcEndpointId => "vpcEndpointId",
        }
    }

    fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Fields AWS lets use only `Equals`.
    fn equals_only(self) -> bool {
        matches!(
            self,
            Field::EventCategory | Field::ReadOnly | Field::ResourcesType
        )
    }

    fn is_resource(self) -> bool {
        matches!(self, Field::ResourcesType | Field::ResourcesArn)
    }
}

/// The operators of an advanced field selector, in the order AWS documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equals,
    StartsWith,
    EndsWith,
    NotEquals,
    NotStartsWith,
    NotEndsWith,
}

impl Op {
    const ALL: [Op; 6] = [
        Op::Equals,
        Op::StartsWith,
        Op::EndsWith,
        Op::NotEquals,
        Op::NotStartsWith,
        Op::NotEndsWith,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Equals => "Equals",
            Op::StartsWith => "StartsWith",
            Op::EndsWith => "EndsWith",
            Op::NotEquals => "NotEquals",
            Op::NotStartsWith => "NotStartsWith",
            Op::NotEndsWith => "NotEndsWith",
        }
    }

    fn negative(self) -> bool {
        matches!(self, Op::NotEquals | Op::NotStartsWith | Op::NotEndsWith)
    }

    /// Whether `value` (the record's) passes this operator's one `operand`.
    fn holds(self, value: &str, operand: &str) -> bool {
        match self {
            Op::Equals => value == operand,
            Op::StartsWith => value.starts_with(operand),
            Op::EndsWith => value.ends_with(operand),
            Op::NotEquals => value != operand,
            Op::NotStartsWith => !value.starts_with(operand),
            Op::NotEndsWith => !value.ends_with(operand),
        }
    }
}

/// The `eventCategory` values an advanced selector may name: AWS's trail categories and
/// `ActivityAuditLog`, the category of the application events Groundtrail puts in the trail.
/// `Insight` is refused (insight selectors choose Insights records), as are the categories
/// only event data stores hold (`ConfigurationItem`, `Evidence`).
const EVENT_CATEGORIES: [&str; 4] = ["Management", "Data", "NetworkActivity", "ActivityAuditLog"];

/// The name of the advanced selector [`Selectors::to_api`] shows for the default.
const EVERYTHING_NAME: &str = "All events";

impl Selectors {
    /// The default of a trail with no selectors configured: every record, management and data
    /// events alike (and application events).
    ///
    /// CloudTrail's own default is all management events and no data events, because AWS
    /// charges for every data event and some (S3 object reads) are very many. Groundtrail
    /// differs on purpose: its implicit trail has always recorded everything, so a default
    /// that dropped data events would silently shrink existing trails on upgrade; its "data
    /// events" are the sidecar's API calls, which an operator puts behind the sidecar exactly
    /// to have them recorded; and nothing here costs per event.
    pub fn everything() -> Selectors {
        Selectors {
            kind: Kind::Everything,
        }
    }

    /// Whether this is the default (`everything()`), for `HasCustomEventSelectors`. Putting the
    /// selectors [`to_api`](Selectors::to_api) shows for the default gives the default back.
    pub fn is_default(&self) -> bool {
        self.kind == Kind::Everything
    }

    /// From a `PutEventSelectors` request body (the whole JSON object; reads `EventSelectors`
    /// or `AdvancedEventSelectors`, exactly one of them, in AWS's PascalCase shapes; `TrailName`
    /// is allowed and ignored, any other member is refused).
    ///
    /// Limits, as AWS documents them: 1 to 5 basic selectors; at most 250 data resource
    /// values across them, not counting values that name a whole type (`arn:aws:s3`); at least
    /// one advanced selector, each with a `Name` of at most 1000 characters and at least one
    /// field selector; a `Field` of 1 to 1000 of `[A-Za-z0-9_.]`; at least one operator per
    /// field selector, each operator a non-empty list of 1 to 2048-character values; at most
    /// 500 values across all operators of all advanced selectors; only `Equals` for
    /// `readOnly` (`true` or `false`), `eventCategory` (see above) and `resources.type`.
    pub fn from_api(input: &Map<String, Value>) -> Result<Selectors, SelectorError> {
        api::parse(input)
    }

    /// The `GetEventSelectors`/`PutEventSelectors` response members: `{"EventSelectors": [...]}`
    /// or `{"AdvancedEventSelectors": [...]}`, normalized as AWS returns them (basic selectors
    /// with all four members; advanced operators in AWS's order, absent ones left out). The
    /// default is shown as one advanced selector, `All events`, taking every category
    /// Groundtrail writes; [`from_api`](Selectors::from_api) reads it back as the default.
    pub fn to_api(&self) -> Value {
        api::render(self)
    }

    /// Whether the trail records `record`.
    pub fn selects(&self, record: &Value) -> bool {
        matching::selects(self, record)
    }
}
