//! Object key names (spec §1.1, §1.2, §2.1).

use chrono::{DateTime, Utc};
use rand::RngExt;

use crate::time;

/// What a trail file holds, which names its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    /// Management and data events: `CloudTrail/`.
    Log,
    /// Insights events (`eventType: AwsCloudTrailInsight`): `CloudTrail-Insight/`.
    Insight,
}

impl FileKind {
    /// The kind of file a record with this `eventType` belongs in.
    pub fn of_event_type(event_type: &str) -> FileKind {
        if event_type == "AwsCloudTrailInsight" {
            FileKind::Insight
        } else {
            FileKind::Log
        }
    }

    /// The folder (and file-name part) of this kind.
    pub fn folder(self) -> &'static str {
        match self {
            FileKind::Log => "CloudTrail",
            FileKind::Insight => "CloudTrail-Insight",
        }
    }
}

/// Where a trail's objects go inside a bucket: the optional key prefix and, for organization
/// trails, the `o-` id folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrailLayout {
    /// `S3KeyPrefix` without leading or trailing slashes; empty for none.
    pub prefix: String,
    /// Organization id (`o-...`) for organization trails.
    pub organization_id: Option<String>,
}

impl TrailLayout {
    pub fn new(prefix: &str, organization_id: Option<&str>) -> TrailLayout {
        TrailLayout {
            prefix: prefix.trim_matches('/').to_string(),
            organization_id: organization_id.map(str::to_string),
        }
    }

    /// `[prefix/]AWSLogs/[o-id/]<account>/`
    pub fn account_root(&self, account: &str) -> String {
        let mut key = String::with_capacity(64);
        if !self.prefix.is_empty() {
            key.push_str(&self.prefix);
            key.push('/');
        }
        key.push_str("AWSLogs/");
        if let Some(org) = &self.organization_id {
            key.push_str(org);
            key.push('/');
        }
        key.push_str(account);
        key.push('/');
        key
    }

    /// The key of a log file delivered at `delivered`, e.g.
    /// `AWSLogs/111122223333/CloudTrail/us-east-2/2015/08/01/111122223333_CloudTrail_us-east-2_20150801T0210Z_Mu0KsOhtH1ar15ZZ.json.gz`.
    pub fn log_file_key(
        &self,
        account: &str,
        region: &str,
        delivered: DateTime<Utc>,
        unique: &str,
    ) -> String {
        self.file_key(FileKind::Log, account, region, delivered, unique)
    }

    /// The key of a file of `kind`: an Insights file is named like a log file with
    /// `CloudTrail-Insight` in place of `CloudTrail`, in the folder and in the name, as AWS
    /// delivers them (e.g. `AWSLogs/123456789015/CloudTrail-Insight/ca-central-1/2020/09/23/123456789015_CloudTrail-Insight_ca-central-1_20200923T0516Z_KL5e9VCV2SS7IqzB.json.gz`).
    pub fn file_key(
        &self,
        kind: FileKind,
        account: &str,
        region: &str,
        delivered: DateTime<Utc>,
        unique: &str,
    ) -> String {
        let folder = kind.folder();
        format!(
            "{}{folder}/{region}/{}/{account}_{folder}_{region}_{}_{unique}.json.gz",
            self.account_root(account),
            time::date_folders(delivered),
            time::log_key_time(delivered),
        )
    }

    /// The folder under which the AWS validator lists digests: no trailing slash (spec §3.2).
    pub fn digest_list_prefix(&self, account: &str, source_region: &str) -> String {
        format!(
            "{}CloudTrail-Digest/{source_region}",
            self.account_root(account)
        )
    }

    /// The key of the digest ending at `end` (spec §2.1).
    pub fn digest_key(
        &self,
        account: &str,
        source_region: &str,
        trail_name: &str,
        home_region: &str,
        end: DateTime<Utc>,
        backfill: bool,
    ) -> String {
        format!(
            "{}/{}/{account}_CloudTrail-Digest_{source_region}_{trail_name}_{home_region}_{}{}.json.gz",
            self.digest_list_prefix(account, source_region),
            time::date_folders(end),
            time::digest_key_time(end),
            if backfill { "_backfill" } else { "" },
        )
    }
}

/// The 16 random `[A-Za-z0-9]` characters that make a log file name unique.
pub fn unique16() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn log_key_matches_aws_example() {
        let t = Utc.with_ymd_and_hms(2015, 8, 1, 2, 10, 59).unwrap();
        let key =
            TrailLayout::default().log_file_key("111122223333", "us-east-2", t, "Mu0KsOhtH1ar15ZZ");
        assert_eq!(
            key,
            "AWSLogs/111122223333/CloudTrail/us-east-2/2015/08/01/111122223333_CloudTrail_us-east-2_20150801T0210Z_Mu0KsOhtH1ar15ZZ.json.gz"
        );
    }

    /// The Insights key of an organization trail as delivered by AWS (from the AWS Secure
    /// Environment Accelerator's documentation of its log locations).
    #[test]
    fn insight_key_matches_a_real_one() {
        let t = Utc.with_ymd_and_hms(2020, 9, 23, 5, 16, 40).unwrap();
        let layout = TrailLayout::new("o-fxozgwu6rc", Some("o-fxozgwu6rc"));
        assert_eq!(
            layout.file_key(
                FileKind::Insight,
                "123456789015",
                "ca-central-1",
                t,
                "KL5e9VCV2SS7IqzB"
            ),
            "o-fxozgwu6rc/AWSLogs/o-fxozgwu6rc/123456789015/CloudTrail-Insight/ca-central-1/2020/09/23/123456789015_CloudTrail-Insight_ca-central-1_20200923T0516Z_KL5e9VCV2SS7IqzB.json.gz"
        );
        assert_eq!(
            FileKind::of_event_type("AwsCloudTrailInsight"),
            FileKind::Insight
        );
        assert_eq!(FileKind::of_event_type("AwsApiCall"), FileKind::Log);
    }

    #[test]
    fn prefix_and_org_folders() {
        let t = Utc.with_ymd_and_hms(2023, 10, 15, 23, 4, 4).unwrap();
        let layout = TrailLayout::new("/logs/prod/", Some("o-abc123defg"));
        let key = layout.digest_key(
            "327878933619",
            "ap-northeast-1",
            "llm-guard-trail",
            "us-west-2",
            t,
            false,
        );
        assert_eq!(
            key,
            "logs/prod/AWSLogs/o-abc123defg/327878933619/CloudTrail-Digest/ap-northeast-1/2023/10/15/327878933619_CloudTrail-Digest_ap-northeast-1_llm-guard-trail_us-west-2_20231015T230404Z.json.gz"
        );
        // The validator reads the stamp by position: key[-24:-8].
        assert_eq!(&key[key.len() - 24..key.len() - 8], "20231015T230404Z");
        let backfill =
            layout.digest_key("327878933619", "ap-northeast-1", "t", "us-west-2", t, true);
        assert!(backfill.ends_with("_20231015T230404Z_backfill.json.gz"));
        assert_eq!(
            layout.digest_list_prefix("327878933619", "ap-northeast-1"),
            "logs/prod/AWSLogs/o-abc123defg/327878933619/CloudTrail-Digest/ap-northeast-1"
        );
    }

    #[test]
    fn unique16_alphabet() {
        let u = unique16();
        assert_eq!(u.len(), 16);
        assert!(u.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(unique16(), u);
    }
}
