//! `[[trails]]`: trails beside the collector's primary trail, and the validated description of
//! every trail ([`TrailSpec`]) that the service, the API and `validate-logs` work from.
//!
//! The primary trail is the one `[trail]`, `[[destinations]]` and `[insights]` describe, exactly
//! as before `[[trails]]` existed: a config without `[[trails]]` runs one trail, unchanged.
//! Each `[[trails]]` entry adds a trail with its own name, destinations, key prefix, selectors,
//! insight types and digest chains. What a trail cannot differ in is shared with `[trail]`: the
//! account, the partition, the log file interval and size, and the digest interval.

use serde::{Deserialize, Serialize};

use crate::config::{Config, DestinationConfig};
use crate::selectors::{
    AdvancedEventSelectorConfig, EventSelectorConfig, Selectors, SelectorsConfig,
};

/// One `[[trails]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrailSection {
    /// The trail's name: in its ARN, its digest file names, and the API's `Name`/`TrailName`.
    /// Unique among all trails, `[trail] name` included.
    pub name: String,
    /// The trail's home region (in its ARN and digest names). Default: `[trail] home_region`.
    #[serde(default)]
    pub home_region: Option<String>,
    /// `S3KeyPrefix`: folder(s) before `AWSLogs/` at every destination of this trail.
    #[serde(default)]
    pub s3_key_prefix: String,
    /// Organization id (`o-...`) for an organization trail's key layout.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// Whether digest files are written (`LogFileValidationEnabled`). Default: true.
    #[serde(default = "yes")]
    pub log_file_validation: bool,
    /// Which of the collector's Insights types (`[insights] types`) this trail records.
    /// Empty: none.
    #[serde(default)]
    pub insight_types: Vec<String>,
    /// Basic event selectors, as in `[trail]`. With neither these nor
    /// `advanced_event_selectors`, the trail records every record.
    #[serde(default)]
    pub event_selectors: Vec<EventSelectorConfig>,
    /// Advanced event selectors, as in `[trail]`; not with `event_selectors`.
    #[serde(default)]
    pub advanced_event_selectors: Vec<AdvancedEventSelectorConfig>,
    /// Where this trail is delivered (at least one), each as a `[[destinations]]` entry.
    /// Destination names need only be unique within the trail.
    pub destinations: Vec<DestinationConfig>,
}

fn yes() -> bool {
    true
}

/// A trail as the collector runs it, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TrailSpec {
    /// Its name.
    pub name: String,
    /// Its home region.
    pub home_region: String,
    /// The key prefix before `AWSLogs/` (may be empty).
    pub s3_key_prefix: String,
    /// The organization id of an organization trail.
    pub organization_id: Option<String>,
    /// Whether digests are written.
    pub log_file_validation: bool,
    /// The Insights types it records.
    pub insight_types: Vec<String>,
    /// The selectors the config gives it.
    pub selectors: Selectors,
    /// Its destinations (never empty).
    pub destinations: Vec<DestinationConfig>,
    /// Whether it is the primary trail (`[trail]`), which lives in the collector's journal;
    /// every other trail has a journal of its own fed from it (see [`crate::trails`]).
    pub primary: bool,
}

impl TrailSpec {
    /// The destination `DescribeTrails`/`GetTrail` report: the first S3 destination, else the
    /// first one. `aws cloudtrail validate-logs --endpoint-url <collector>` reads the digests
    /// and log files from `S3BucketName` with S3 calls, so naming a local directory's bucket
    /// there (a name no S3 endpoint has) makes it fail with NoSuchBucket whenever a reachable
    /// bucket exists.
    pub fn reported_destination(&self) -> &DestinationConfig {
        self.destinations
            .iter()
            .find(|d| matches!(d, DestinationConfig::S3 { .. }))
            .unwrap_or(&self.destinations[0])
    }

    /// The bucket name of [`TrailSpec::reported_destination`].
    pub fn bucket(&self) -> &str {
        match self.reported_destination() {
            DestinationConfig::Local { bucket, .. } | DestinationConfig::S3 { bucket, .. } => {
                bucket
            }
        }
    }

    /// Whether it records Insights records of `insight_type`.
    pub fn records_insight(&self, insight_type: &str) -> bool {
        self.insight_types.iter().any(|t| t == insight_type)
    }

    /// The ARN of this trail for `account`.
    pub fn arn(&self, partition: &str, account: &str) -> String {
        format!(
            "arn:{partition}:cloudtrail:{}:{account}:trail/{}",
            self.home_region, self.name
        )
    }

    /// One line for `check-config`: what the trail is and where it comes from.
    pub fn describe(&self) -> String {
        let dests: Vec<String> = self.destinations.iter().map(|d| d.name()).collect();
        let selectors = if self.selectors.is_default() {
            "every record".to_string()
        } else {
            "its event selectors".to_string()
        };
        format!(
            "trail {:?} ({}): home region {}, key prefix {:?}, destinations [{}], records {}, insights [{}], digests {}",
            self.name,
            if self.primary {
                "primary: [trail], [[destinations]], [insights]"
            } else {
                "[[trails]]"
            },
            self.home_region,
            self.s3_key_prefix,
            dests.join(", "),
            selectors,
            self.insight_types.join(", "),
            if self.log_file_validation {
                "on"
            } else {
                "off"
            },
        )
    }
}

/// Whether `candidate` (a trail name, or an ARN ending in `:trail/<name>`, whatever its region
/// and account) names the trail `trail`: how a record's `requestParameters` are matched to a
/// trail ([`crate::trail_control`]), where the exact ARN may not be known.
pub fn names_trail(candidate: &str, trail: &str) -> bool {
    candidate == trail
        || (candidate.starts_with("arn:")
            && candidate
                .strip_suffix(trail)
                .is_some_and(|r| r.ends_with(":trail/")))
}

/// Checks a trail name: 1-128 letters, digits, `.`, `_`, `-` (what `[trail] name` always took;
/// CloudTrail's own rule also wants 3 characters and a letter or digit first).
pub fn check_name(field: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} {name:?} must be 1-128 letters, digits, '-', '.' or '_'"
        ))
    }
}

/// Checks an organization id (`o-` and 10-32 lowercase letters or digits).
pub fn check_organization_id(field: &str, org: &str) -> Result<(), String> {
    let ok = org.len() >= 12
        && org.len() <= 34
        && org.starts_with("o-")
        && org[2..]
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} {org:?} is not of the form o-[a-z0-9]{{10,32}}"
        ))
    }
}

/// Checks a list of destinations: unique names, valid server-side encryption settings.
pub fn check_destinations(field: &str, destinations: &[DestinationConfig]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for d in destinations {
        if !names.insert(d.name()) {
            return Err(format!("{field} name {:?} is used twice", d.name()));
        }
        if let DestinationConfig::S3 {
            sse,
            sse_kms_key_id,
            ..
        } = d
        {
            match sse.as_deref() {
                None | Some("AES256") | Some("aws:kms") => {}
                Some(other) => {
                    return Err(format!(
                        "{field} {}: sse = {other:?}; use \"AES256\" or \"aws:kms\"",
                        d.name()
                    ));
                }
            }
            if sse_kms_key_id.is_some() && sse.as_deref() != Some("aws:kms") {
                return Err(format!(
                    "{field} {}: sse_kms_key_id needs sse = \"aws:kms\"",
                    d.name()
                ));
            }
        }
    }
    Ok(())
}

impl TrailSection {
    /// Checks the entry against the rest of `config` and returns the trail it describes.
    fn spec(&self, config: &Config) -> Result<TrailSpec, String> {
        let field = format!("[[trails]] {:?}", self.name);
        check_name("[[trails]] name", &self.name)?;
        // It names a directory (`<journal>/trails/<name>`): `.` and `..` must not pass.
        if !self.name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "[[trails]] name {:?} must start with a letter or digit",
                self.name
            ));
        }
        let home_region = self
            .home_region
            .clone()
            .unwrap_or_else(|| config.trail.home_region.clone());
        if !groundtrail_common::event::is_region(&home_region) {
            return Err(format!(
                "{field}: home_region {home_region:?} is not a region name"
            ));
        }
        if let Some(org) = &self.organization_id {
            check_organization_id(&format!("{field}: organization_id"), org)?;
        }
        let selectors = SelectorsConfig {
            event_selectors: self.event_selectors.clone(),
            advanced_event_selectors: self.advanced_event_selectors.clone(),
        }
        .to_selectors()
        .map_err(|e| format!("{field}: event selectors: {e}"))?;
        let mut seen = Vec::new();
        for t in &self.insight_types {
            if !config.insights.selects(t) {
                return Err(format!(
                    "{field}: insight_types: {t:?} is not in [insights] types ({}); the collector \
                     computes Insights once and each trail takes the types it lists",
                    if config.insights.types.is_empty() {
                        "none".to_string()
                    } else {
                        config.insights.types.join(", ")
                    }
                ));
            }
            if seen.contains(&t) {
                return Err(format!("{field}: insight_types: {t:?} is listed twice"));
            }
            seen.push(t);
        }
        if self.destinations.is_empty() {
            return Err(format!(
                "{field}: destinations is empty; give the trail at least one [[trails.destinations]]"
            ));
        }
        check_destinations(&format!("{field} destinations"), &self.destinations)?;
        Ok(TrailSpec {
            name: self.name.clone(),
            home_region,
            s3_key_prefix: self.s3_key_prefix.clone(),
            organization_id: self.organization_id.clone(),
            log_file_validation: self.log_file_validation,
            insight_types: self.insight_types.clone(),
            selectors,
            destinations: self.destinations.clone(),
            primary: false,
        })
    }
}

impl Config {
    /// Every trail the collector runs, the primary one first, checked. The error names the
    /// field.
    pub fn trail_specs(&self) -> Result<Vec<TrailSpec>, String> {
        let t = &self.trail;
        let primary = TrailSpec {
            name: t.name.clone(),
            home_region: t.home_region.clone(),
            s3_key_prefix: t.s3_key_prefix.clone(),
            organization_id: t.organization_id.clone(),
            log_file_validation: t.log_file_validation,
            insight_types: self.insights.types.clone(),
            selectors: t
                .selectors()
                .map_err(|e| format!("[trail] event selectors: {e}"))?,
            destinations: self.effective_destinations(),
            primary: true,
        };
        let mut specs = vec![primary];
        for section in &self.trails {
            let spec = section.spec(self)?;
            if specs.iter().any(|s| s.name == spec.name) {
                return Err(format!(
                    "[[trails]] name {:?} is used by another trail ([trail] name included)",
                    spec.name
                ));
            }
            specs.push(spec);
        }
        // Logs and metrics name a destination by its name alone.
        let mut names = std::collections::HashMap::new();
        for spec in &specs {
            for d in &spec.destinations {
                if let Some(other) = names.insert(d.name(), spec.name.clone()) {
                    return Err(format!(
                        "destination name {:?} is used by trails {other:?} and {:?}: give one of them a `name`",
                        d.name(),
                        spec.name
                    ));
                }
            }
        }
        Ok(specs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<TrailSpec>, String> {
        let config = Config::parse(text).map_err(|e| format!("{e:#}"))?;
        config.trail_specs()
    }

    /// Without `[[trails]]` the collector runs one trail, the one `[trail]` describes.
    #[test]
    fn the_single_trail_config_is_one_primary_trail() {
        let specs = parse("[trail]\nname = \"audit\"\ns3_key_prefix = \"p\"\n").unwrap();
        assert_eq!(specs.len(), 1);
        let s = &specs[0];
        assert!(s.primary && s.selectors.is_default() && s.log_file_validation);
        assert_eq!((s.name.as_str(), s.s3_key_prefix.as_str()), ("audit", "p"));
        assert_eq!(s.destinations, vec![DestinationConfig::default_local()]);
        assert!(s.describe().contains("primary"), "{}", s.describe());
    }

    #[test]
    fn extra_trails_take_their_own_settings_and_share_the_rest() {
        let specs = parse(
            r#"
[trail]
home_region = "eu-west-1"
[insights]
types = ["ApiErrorRateInsight"]
[[trails]]
name = "developers"
s3_key_prefix = "dev"
insight_types = ["ApiErrorRateInsight"]
advanced_event_selectors = [{ field_selectors = [{ field = "readOnly", equals = ["false"] }] }]
[[trails.destinations]]
type = "local"
name = "dev"
path = "/tmp/dev"
bucket = "dev-bucket"
"#,
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        let d = &specs[1];
        assert!(!d.primary && !d.selectors.is_default());
        assert_eq!(d.home_region, "eu-west-1");
        assert_eq!(d.bucket(), "dev-bucket");
        assert!(
            d.records_insight("ApiErrorRateInsight") && !d.records_insight("ApiCallRateInsight")
        );
        let named = |n: &str| names_trail(n, &d.name);
        assert!(named("developers"));
        assert!(named(
            "arn:aws:cloudtrail:eu-west-1:111122223333:trail/developers"
        ));
        assert!(!named(
            "arn:aws:cloudtrail:eu-west-1:111122223333:trail/xdevelopers"
        ));
        assert!(!named("developer"));
    }

    /// Each bad entry is refused with the field named.
    #[test]
    fn bad_trails_are_refused_with_the_field_named() {
        let dest = "[[trails.destinations]]\ntype = \"local\"\npath = \"/tmp/x\"\n";
        for (body, want) in [
            ("name = \"groundtrail\"\n", "used by another trail"),
            ("name = \"bad name\"\n", "[[trails]] name \"bad name\""),
            ("name = \"..\"\n", "must start with a letter or digit"),
            ("name = \".\"\n", "must start with a letter or digit"),
            (
                "name = \"t\"\nhome_region = \"Moon 1\"\n",
                "home_region \"Moon 1\"",
            ),
            (
                "name = \"t\"\norganization_id = \"x\"\n",
                "organization_id \"x\"",
            ),
            (
                "name = \"t\"\ninsight_types = [\"ApiCallRateInsight\"]\n",
                "not in [insights] types (none)",
            ),
            (
                "name = \"t\"\nevent_selectors = [{ read_write_type = \"Sideways\" }]\n",
                "event selectors",
            ),
        ] {
            let err = parse(&format!("[[trails]]\n{body}{dest}")).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
        let err = parse("[[trails]]\nname = \"t\"\ndestinations = []\n").unwrap_err();
        assert!(err.contains("destinations is empty"), "{err}");
        let err = parse(&format!("[[trails]]\nname = \"t\"\n{dest}{dest}")).unwrap_err();
        assert!(err.contains("used twice"), "{err}");
        let err = parse(&format!(
            "[[trails]]\nname = \"t\"\n{dest}[[trails]]\nname = \"t\"\n{dest}"
        ))
        .unwrap_err();
        assert!(err.contains("used by another trail"), "{err}");
        let err = parse(&format!("[[trails]]\nname = \"t\"\n{dest}")).unwrap_err();
        assert!(
            err.contains("used by trails \"groundtrail\" and \"t\""),
            "{err}"
        );
        let err = parse(&format!("[[trails]]\nname = \"t\"\nbucket = \"b\"\n{dest}")).unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }
}
