//! `groundtrail-collector validate-logs`: the AWS CLI's `aws cloudtrail validate-logs`, against a
//! local directory or any S3-compatible store.
//!
//! This is a line-by-line port of `awscli/customizations/cloudtrail/validation.py` (awscli
//! 1.46.2, spec §3): the same ARN parsing, the same digest listing (ListObjects with the same
//! `Prefix` and `Marker`, the same key filter and date window), the same chain walk from the
//! newest digest backwards, the same order of checks per digest, the same status lines (errors on
//! stderr, `valid` lines on stdout with `--verbose`), the same summary, and exit code 1 when
//! anything is invalid or missing. Where the AWS CLI would stop with an exception (no public
//! keys, a store that refuses a request), this prints the message and exits 255, as it does.
//!
//! What differs is only where things are read from: instead of calling CloudTrail's
//! `DescribeTrails` and `ListPublicKeys`, the bucket, key prefix and organization id come from
//! `--s3-bucket`/`--s3-prefix` or the collector config, and the public keys from the collector's
//! signing key (plus its retired keys) or from `--public-key` files.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

use groundtrail_common::trail::public_key::{is_pkcs1_rsa_public_key, pem_decode, spki_to_pkcs1};
use groundtrail_common::trail::{SigningKey, fingerprint, sha256_hex, verify_signature};

use crate::config::{ChecksumMode, Config, DestinationConfig};
use crate::destination::{self, Destination, DestinationError};

/// Command-line arguments: the AWS CLI's flags plus where to read from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Args {
    /// ARN of the trail to validate, e.g. `arn:aws:cloudtrail:us-east-1:123456789012:trail/groundtrail`.
    #[arg(long)]
    pub trail_arn: String,
    /// Validate log files delivered on or after this UTC time, e.g. `2015-01-08T05:21:42Z`.
    #[arg(long)]
    pub start_time: String,
    /// Validate log files delivered on or before this UTC time (default: now).
    #[arg(long)]
    pub end_time: Option<String>,
    /// Bucket the digests were written to (as named inside them). Without it, the bucket and key
    /// prefix come from the collector config, as the AWS CLI takes them from DescribeTrails.
    #[arg(long)]
    pub s3_bucket: Option<String>,
    /// Key prefix before `AWSLogs/` (only used together with --s3-bucket, as in the AWS CLI).
    #[arg(long)]
    pub s3_prefix: Option<String>,
    /// Account whose digests to validate (organization trails: the member account).
    #[arg(long)]
    pub account_id: Option<String>,
    /// Also print every valid digest and log file.
    #[arg(long)]
    pub verbose: bool,
    /// Source region whose digest chain to validate (default: the trail ARN's home region).
    #[arg(long)]
    pub region: Option<String>,
    /// Read the trail from this directory (a local destination's `path`).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["s3_endpoint", "config"])]
    pub local_dir: Option<PathBuf>,
    /// Read the trail from the S3-compatible store at this URL (needs --s3-bucket).
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    pub s3_endpoint: Option<String>,
    /// Path-style S3 addressing (needed for IP endpoints).
    #[arg(long, requires = "s3_endpoint")]
    pub force_path_style: bool,
    /// Region of the S3 client used with --s3-endpoint.
    #[arg(long, value_name = "REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Collector config: read its first destination with its trail layout, and trust its
    /// signing key and retired keys. Without --local-dir, --s3-endpoint or --config, the
    /// embedded default config is used (what `serve` without a config writes).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// PEM public key (`RSA PUBLIC KEY` or `PUBLIC KEY`) trusted to sign digests; repeatable.
    #[arg(long = "public-key", value_name = "FILE")]
    pub public_keys: Vec<PathBuf>,
}

/// Runs the validation; returns the process exit code: 0 when everything found is valid (also
/// when no digest was found, as the AWS CLI does), 1 when any digest or log file is invalid or
/// missing, 255 when the run could not be completed (the message is on stderr).
pub async fn run(args: Args) -> anyhow::Result<i32> {
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let progress = std::io::stderr().is_terminal();
    match run_inner(args, &mut stdout, &mut stderr, progress).await {
        Ok(code) => Ok(code),
        Err(e) => {
            let _ = stdout.flush();
            // The AWS CLI writes an aborting exception as "\n<message>\n" and exits 255.
            let _ = write!(stderr, "\n{e:#}\n");
            Ok(255)
        }
    }
}

async fn run_inner(
    args: Args,
    out: &mut dyn Write,
    err: &mut dyn Write,
    progress: bool,
) -> anyhow::Result<i32> {
    let start_time = parse_date(&args.start_time)?;
    let end_time = match &args.end_time {
        Some(t) => parse_date(t)?,
        None => Utc::now(),
    };
    if start_time > end_time {
        bail!("Invalid time range specified: start-time must occur before end-time");
    }
    assert_cloudtrail_arn_is_valid(&args.trail_arn)?;

    // Where to read, and what a `DescribeTrails` would have said about the trail.
    let config = match (&args.config, &args.local_dir, &args.s3_endpoint) {
        (Some(path), _, _) => Some(Config::load(path)?),
        (None, None, None) => Some(Config::default()),
        _ => None,
    };
    // The trail the ARN names, among the config's trails (`[trail]` and `[[trails]]`).
    let spec = match &config {
        Some(config) => {
            let specs = config.trail_specs().map_err(anyhow::Error::msg)?;
            let t = &config.trail;
            let found = specs.into_iter().find(|s| {
                args.trail_arn.split('/').next_back() == Some(s.name.as_str())
                    && args.trail_arn.split(':').nth(3) == Some(s.home_region.as_str())
                    && args.trail_arn.split(':').nth(1) == Some(t.partition.as_str())
                    && (t.account_id.is_empty()
                        || args.trail_arn.split(':').nth(4) == Some(t.account_id.as_str()))
            });
            match (found, &args.s3_bucket) {
                (Some(s), _) => Some(s),
                // With --s3-bucket the trail need not be configured (as the AWS CLI).
                (None, Some(_)) => None,
                (None, None) => bail!("A trail could not be found for {}", args.trail_arn),
            }
        }
        None => None,
    };
    let (stores, default_bucket) = match (&config, &args.local_dir, &args.s3_endpoint) {
        (Some(config), _, _) => {
            let dest = match &spec {
                Some(s) => s.destinations[0].clone(),
                None => config
                    .effective_destinations()
                    .into_iter()
                    .next()
                    .expect("effective_destinations is never empty"),
            };
            let bucket = match &dest {
                DestinationConfig::Local { bucket, .. } | DestinationConfig::S3 { bucket, .. } => {
                    bucket.clone()
                }
            };
            (Stores::from_destination(dest)?, Some(bucket))
        }
        (None, Some(dir), _) => {
            if !dir.is_dir() {
                bail!("--local-dir {} is not a directory", dir.display());
            }
            let bucket = args
                .s3_bucket
                .clone()
                .unwrap_or_else(|| "groundtrail-trail".to_string());
            (
                Stores::from_destination(DestinationConfig::Local {
                    name: Some("validate".into()),
                    path: dir.clone(),
                    bucket: bucket.clone(),
                })?,
                Some(bucket),
            )
        }
        (None, None, Some(endpoint)) => (
            Stores::from_destination(DestinationConfig::S3 {
                name: Some("validate".into()),
                bucket: args.s3_bucket.clone().unwrap_or_default(),
                region: args.s3_region.clone(),
                endpoint: Some(endpoint.clone()),
                force_path_style: args.force_path_style,
                checksums: ChecksumMode::WhenSupported,
                sse: None,
                sse_kms_key_id: None,
            })?,
            None,
        ),
        (None, None, None) => unreachable!("the embedded default config is used"),
    };

    let mut keys = KeySet::default();
    if let Some(config) = &config {
        keys.add_config(config)?;
    }
    for path in &args.public_keys {
        keys.add_pem_file(path)?;
    }
    if keys.keys.is_empty() {
        bail!("no public keys to validate with: pass --public-key FILE or --config FILE");
    }

    // create_digest_traverser: bucket and prefix from the flags, else from the trail itself.
    let mut account_id = args.account_id.clone().filter(|a| !a.is_empty());
    let mut organization_id = None;
    let (bucket, prefix) = match &args.s3_bucket {
        Some(bucket) => (bucket.clone(), args.s3_prefix.clone()),
        None => match &config {
            Some(_) => {
                let t = spec
                    .as_ref()
                    .expect("found above, or --s3-bucket was given");
                if let Some(org) = &t.organization_id {
                    if account_id.is_none() {
                        bail!("Missing required parameter for organization trail: '--account-id'");
                    }
                    organization_id = Some(org.clone());
                }
                let prefix = t.s3_key_prefix.trim_matches('/').to_string();
                (
                    default_bucket.expect("config destinations name a bucket"),
                    Some(prefix),
                )
            }
            None => match default_bucket {
                Some(bucket) => (bucket, args.s3_prefix.clone()),
                None => bail!("--s3-bucket is required with --s3-endpoint"),
            },
        },
    };
    let prefix = prefix.filter(|p| !p.is_empty());
    let home_region = args
        .trail_arn
        .split(':')
        .nth(3)
        .unwrap_or_default()
        .to_string();
    let trail_name = args
        .trail_arn
        .split('/')
        .next_back()
        .unwrap_or_default()
        .to_string();
    if account_id.is_none() {
        account_id = args.trail_arn.split(':').nth(4).map(str::to_string);
    }
    let source_region = args.region.clone().unwrap_or_else(|| home_region.clone());

    let mut validator = Validator {
        trail: Trail {
            account_id: account_id.unwrap_or_default(),
            trail_name,
            home_region,
            source_region,
            organization_id,
        },
        stores,
        keys,
        out,
        err,
        verbose: args.verbose,
        trail_arn: args.trail_arn.clone(),
        start_time,
        end_time,
        counts: Counts::default(),
        is_last_status_double_space: true,
        found_start_time: None,
        found_end_time: None,
        listing_cache: HashMap::new(),
        progress: None,
        show_progress: progress,
    };
    validator.call(&bucket, prefix.as_deref()).await
}

// ------------------------------------------------------------------------------------------
// Dates, the way the AWS CLI reads and writes them.

const DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const DISPLAY_DATE_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

fn format_date(t: DateTime<Utc>) -> String {
    t.format(DATE_FORMAT).to_string()
}

fn format_display_date(t: DateTime<Utc>) -> String {
    t.format(DISPLAY_DATE_FORMAT).to_string()
}

/// `normalize_date(parse_date(s))`: the AWS CLI parses with dateutil and then *replaces* the
/// time zone with UTC (it does not convert), so `10:00+02:00` means 10:00 UTC there, and here.
pub fn parse_date(s: &str) -> anyhow::Result<DateTime<Utc>> {
    parse_date_opt(s).ok_or_else(|| anyhow::anyhow!("Unable to parse date value: {s}"))
}

fn parse_date_opt(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let utc = |n: NaiveDateTime| Utc.from_utc_datetime(&n);
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(utc(t.naive_local()));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(utc(t.naive_local()));
        }
    }
    let bare = s
        .strip_suffix("UTC")
        .or_else(|| s.strip_suffix('Z'))
        .or_else(|| s.strip_suffix('z'))
        .unwrap_or(s)
        .trim_end();
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
        "%Y%m%dT%H%M%S",
        "%Y%m%dT%H%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(bare, f) {
            return Some(utc(n));
        }
    }
    for f in ["%Y-%m-%d", "%Y%m%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(bare, f) {
            return Some(utc(d.and_hms_opt(0, 0, 0)?));
        }
    }
    None
}

/// `arn:.+:cloudtrail:.+:\d{12}:trail/.+`, matched at the start like Python's `re.match`.
fn assert_cloudtrail_arn_is_valid(arn: &str) -> anyhow::Result<()> {
    let ok = (|| {
        let rest = arn.strip_prefix("arn:")?;
        // `.+:cloudtrail:` — some non-empty text, then ":cloudtrail:" (any occurrence).
        rest.match_indices(":cloudtrail:")
            .any(|(i, m)| {
                i > 0 && {
                    let after = &rest[i + m.len()..];
                    // `.+:\d{12}:trail/.+`
                    after.match_indices(":trail/").any(|(j, t)| {
                        j >= 14
                            && after.as_bytes()[j - 13] == b':'
                            && after[j - 12..j].bytes().all(|c| c.is_ascii_digit())
                            && after.len() > j + t.len()
                            && !after[j + t.len()..].starts_with('\n')
                    })
                }
            })
            .then_some(())
    })()
    .is_some();
    if !ok {
        bail!("Invalid trail ARN provided: {arn}");
    }
    Ok(())
}

fn is_backfill_digest_key(key: &str) -> bool {
    key.ends_with("_backfill.json.gz")
}

/// The key's date stamp by position, as the AWS CLI reads it (`key[-24:-8]`).
fn extract_digest_key_date(key: &str) -> &str {
    let (from_end, to_end) = if is_backfill_digest_key(key) {
        (33, 17)
    } else {
        (24, 8)
    };
    let len = key.len();
    let a = len.saturating_sub(from_end);
    let b = len.saturating_sub(to_end);
    key.get(a..b).unwrap_or("")
}

/// `str(value)` in Python, for values taken from a digest's JSON.
fn py_str(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "None".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(true)) => "True".into(),
        Some(Value::Bool(false)) => "False".into(),
        Some(other) => other.to_string(),
    }
}

// ------------------------------------------------------------------------------------------
// Where objects are read from.

/// Opens one [`Destination`] per bucket the chain names, the way the AWS CLI's
/// `S3ClientProvider` makes one client per bucket.
struct Stores {
    template: DestinationConfig,
    cache: HashMap<String, Arc<dyn Destination>>,
}

impl Stores {
    fn from_destination(template: DestinationConfig) -> anyhow::Result<Stores> {
        Ok(Stores {
            template,
            cache: HashMap::new(),
        })
    }

    /// The store holding `bucket`.
    async fn get(&mut self, bucket: &str) -> anyhow::Result<Arc<dyn Destination>> {
        if let Some(d) = self.cache.get(bucket) {
            return Ok(d.clone());
        }
        let dest = match &self.template {
            DestinationConfig::Local {
                path,
                bucket: local_bucket,
                ..
            } => {
                if bucket != local_bucket {
                    bail!(
                        "An error occurred (NoSuchBucket): bucket {bucket:?} is not in {} (it holds bucket {local_bucket:?}; name it with --s3-bucket)",
                        path.display()
                    );
                }
                let dir = path.clone();
                let name = self.template.name();
                let bucket = bucket.to_string();
                Arc::new(destination::local::LocalDestination::open(
                    name, &dir, bucket,
                )?) as Arc<dyn Destination>
            }
            DestinationConfig::S3 { .. } => {
                let mut config = self.template.clone();
                if let DestinationConfig::S3 { bucket: b, .. } = &mut config {
                    *b = bucket.to_string();
                }
                destination::open(&config).await?
            }
        };
        self.cache.insert(bucket.to_string(), dest.clone());
        Ok(dest)
    }
}

// ------------------------------------------------------------------------------------------
// Public keys: what ListPublicKeys would return.

#[derive(Debug, Clone)]
struct PublicKey {
    der: Vec<u8>,
    fingerprint: String,
    /// Validity window; `None` for keys valid at any time (the current signing key and keys
    /// given with `--public-key`).
    valid: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

#[derive(Debug, Default)]
struct KeySet {
    keys: Vec<PublicKey>,
}

impl KeySet {
    fn add_der(&mut self, der: Vec<u8>, valid: Option<(DateTime<Utc>, DateTime<Utc>)>) {
        let fingerprint = fingerprint(&der);
        self.keys.push(PublicKey {
            der,
            fingerprint,
            valid,
        });
    }

    fn add_config(&mut self, config: &Config) -> anyhow::Result<()> {
        let key = SigningKey::load(&config.signing.key_file)
            .with_context(|| "cannot read the signing key named in the collector config")?;
        self.add_der(key.public_key_der().to_vec(), None);
        for retired in &config.signing.retired_keys {
            let der = read_public_key_pem(&retired.public_key_file)?;
            let from = parse_date(&retired.valid_from)
                .with_context(|| format!("retired key {}", retired.public_key_file.display()))?;
            let until = parse_date(&retired.valid_until)
                .with_context(|| format!("retired key {}", retired.public_key_file.display()))?;
            self.add_der(der, Some((from, until)));
        }
        Ok(())
    }

    fn add_pem_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let der = read_public_key_pem(path)?;
        self.add_der(der, None);
        Ok(())
    }

    /// Keys valid at some time between `start` and `end`, by fingerprint.
    fn in_range(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> HashMap<String, Vec<u8>> {
        self.keys
            .iter()
            .filter(|k| {
                k.valid
                    .is_none_or(|(from, until)| from <= end && until >= start)
            })
            .map(|k| (k.fingerprint.clone(), k.der.clone()))
            .collect()
    }
}

/// Reads a PEM public key as PKCS#1 `RSAPublicKey` DER (the bytes AWS publishes and
/// fingerprints). `PUBLIC KEY` (X.509 SubjectPublicKeyInfo) is unwrapped to its PKCS#1 part.
fn read_public_key_pem(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read public key {}", path.display()))?;
    let (label, der) = pem_decode(&text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{} is not a PEM public key", path.display()))?;
    match label.as_str() {
        "RSA PUBLIC KEY" => Ok(der),
        "PUBLIC KEY" => spki_to_pkcs1(&der)
            .map_err(anyhow::Error::msg)
            .with_context(|| {
                format!(
                    "{} is not an RSA SubjectPublicKeyInfo public key",
                    path.display()
                )
            }),
        other => bail!(
            "{}: PEM block {other:?}; expected \"RSA PUBLIC KEY\" or \"PUBLIC KEY\"",
            path.display()
        ),
    }
}

// ------------------------------------------------------------------------------------------
// The traversal (DigestProvider + DigestTraverser + CloudTrailValidateLogs).

struct Trail {
    account_id: String,
    trail_name: String,
    home_region: String,
    source_region: String,
    organization_id: Option<String>,
}

impl Trail {
    fn account_root(&self) -> String {
        match &self.organization_id {
            Some(org) => format!("AWSLogs/{org}/{}/", self.account_id),
            None => format!("AWSLogs/{}/", self.account_id),
        }
    }

    /// `_create_digest_key`: the key a digest ending one minute before `start` would have; the
    /// listing's `Marker`.
    fn marker(&self, start: DateTime<Utc>, prefix: Option<&str>) -> String {
        let date = start - Duration::minutes(1);
        let (a, src, home, name) = (
            &self.account_id,
            &self.source_region,
            &self.home_region,
            &self.trail_name,
        );
        let key = format!(
            "{}CloudTrail-Digest/{src}/{}/{a}_CloudTrail-Digest_{src}_{name}_{home}_{}.json.gz",
            self.account_root(),
            date.format("%Y/%m/%d"),
            format_date(date),
        );
        match prefix {
            Some(p) => format!("{p}/{key}"),
            None => key,
        }
    }

    /// `_create_digest_prefix`
    fn list_prefix(&self, prefix: Option<&str>) -> String {
        let p = format!(
            "{}CloudTrail-Digest/{}",
            self.account_root(),
            self.source_region
        );
        match prefix {
            Some(k) => format!("{k}/{p}"),
            None => p,
        }
    }

    /// The AWS CLI's digest key regex:
    /// `^[prefix/]AWSLogs/[o-id/]<acct>/CloudTrail\-Digest/<src>/\d+/\d+/\d+/<acct>_CloudTrail\-Digest_<src>_<name>_<home>_.+(?:_backfill)?\.json\.gz$`
    fn key_matches(&self, key: &str, prefix: Option<&str>) -> bool {
        let head = self.list_prefix(prefix) + "/";
        let Some(rest) = key.strip_prefix(&head) else {
            return false;
        };
        let mut rest = rest;
        for _ in 0..3 {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || rest.as_bytes().get(digits) != Some(&b'/') {
                return false;
            }
            rest = &rest[digits + 1..];
        }
        let name = format!(
            "{}_CloudTrail-Digest_{}_{}_{}_",
            self.account_id, self.source_region, self.trail_name, self.home_region
        );
        let Some(tail) = rest.strip_prefix(&name) else {
            return false;
        };
        // `.+\.json\.gz$`; `.` matches anything but a newline, `$` also before a final newline.
        let tail = tail.strip_suffix('\n').unwrap_or(tail);
        tail.len() > ".json.gz".len() && tail.ends_with(".json.gz") && !tail.contains('\n')
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    valid_digests: usize,
    invalid_digests: usize,
    valid_backfill_digests: usize,
    invalid_backfill_digests: usize,
    valid_logs: usize,
    invalid_logs: usize,
}

/// Why a digest was not valid; `Abort` ends the run (the AWS CLI re-raises those).
enum DigestFailure {
    Missing,
    Invalid(String),
    Abort(anyhow::Error),
}

struct Validator<'a> {
    trail: Trail,
    stores: Stores,
    keys: KeySet,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    verbose: bool,
    trail_arn: String,
    start_time: DateTime<Utc>,
    end_time: DateTime<Utc>,
    counts: Counts,
    is_last_status_double_space: bool,
    found_start_time: Option<DateTime<Utc>>,
    found_end_time: Option<DateTime<Utc>>,
    /// `DigestProvider._digest_cache`: (bucket, prefix, start, end) -> (standard, backfill).
    #[allow(clippy::type_complexity)]
    listing_cache:
        HashMap<(String, Option<String>, DateTime<Utc>, DateTime<Utc>), (Vec<String>, Vec<String>)>,
    progress: Option<indicatif::ProgressBar>,
    show_progress: bool,
}

impl Validator<'_> {
    async fn call(&mut self, bucket: &str, prefix: Option<&str>) -> anyhow::Result<i32> {
        let line = format!(
            "Validating log files for trail {} between {} and {}\n\n",
            self.trail_arn,
            format_display_date(self.start_time),
            format_display_date(self.end_time)
        );
        self.write_out(&line);
        let result = async {
            self.traverse_digests(bucket, prefix, false).await?;
            self.traverse_digests(bucket, prefix, true).await
        }
        .await;
        if let Some(pb) = self.progress.take() {
            pb.finish_and_clear();
        }
        result?;
        self.write_summary_text();
        self.out.flush()?;
        self.err.flush()?;
        let c = self.counts;
        Ok(
            if c.invalid_digests + c.invalid_backfill_digests > 0 || c.invalid_logs > 0 {
                1
            } else {
                0
            },
        )
    }

    fn write_out(&mut self, text: &str) {
        let out = &mut *self.out;
        match &self.progress {
            Some(pb) => pb.suspend(|| {
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }),
            None => {
                let _ = out.write_all(text.as_bytes());
            }
        }
    }

    fn write_err(&mut self, text: &str) {
        let _ = self.out.flush();
        let err = &mut *self.err;
        match &self.progress {
            Some(pb) => pb.suspend(|| {
                let _ = err.write_all(text.as_bytes());
                let _ = err.flush();
            }),
            None => {
                let _ = err.write_all(text.as_bytes());
            }
        }
    }

    /// `_write_status`: errors to stderr framed by blank lines, `valid` lines to stdout with
    /// `--verbose`.
    fn write_status(&mut self, message: &str, is_error: bool) {
        if is_error {
            let text = if self.is_last_status_double_space {
                format!("{message}\n\n")
            } else {
                format!("\n{message}\n\n")
            };
            self.write_err(&text);
            self.is_last_status_double_space = true;
        } else if self.verbose {
            self.is_last_status_double_space = false;
            self.write_out(&format!("{message}\n"));
        }
    }

    fn write_summary_text(&mut self) {
        let mut s = String::new();
        if !self.is_last_status_double_space {
            s.push('\n');
        }
        s.push_str(&format!(
            "Results requested for {} to {}\n",
            format_display_date(self.start_time),
            format_display_date(self.end_time)
        ));
        let c = self.counts;
        let total_valid = c.valid_digests + c.valid_backfill_digests;
        let total_invalid = c.invalid_digests + c.invalid_backfill_digests;
        if total_valid == 0 && total_invalid == 0 {
            s.push_str("No digests found\n");
            self.write_out(&s);
            return;
        }
        match (self.found_start_time, self.found_end_time) {
            (Some(a), Some(b)) => s.push_str(&format!(
                "Results found for {} to {}:\n",
                format_display_date(a),
                format_display_date(b)
            )),
            _ => s.push_str("No valid digests found in range\n"),
        }
        for (valid, invalid, name) in [
            (c.valid_digests, c.invalid_digests, "digest"),
            (
                c.valid_backfill_digests,
                c.invalid_backfill_digests,
                "backfill digest",
            ),
            (c.valid_logs, c.invalid_logs, "log"),
        ] {
            let total = valid + invalid;
            if total > 0 {
                s.push_str(&format!("\n{valid}/{total} {name} files valid"));
                if invalid > 0 {
                    s.push_str(&format!(", {invalid}/{total} {name} files INVALID"));
                }
            }
        }
        s.push('\n');
        self.write_out(&s);
    }

    /// `load_digest_keys_in_range`, cached per (bucket, prefix, start, end).
    async fn load_digests(
        &mut self,
        bucket: &str,
        prefix: Option<&str>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        is_backfill: bool,
    ) -> anyhow::Result<Vec<String>> {
        let cache_key = (bucket.to_string(), prefix.map(str::to_string), start, end);
        if !self.listing_cache.contains_key(&cache_key) {
            let lists = self
                .load_all_digest_keys_in_range(bucket, prefix, start, end)
                .await?;
            self.listing_cache.insert(cache_key.clone(), lists);
        }
        let (standard, backfill) = &self.listing_cache[&cache_key];
        Ok(if is_backfill {
            backfill.clone()
        } else {
            standard.clone()
        })
    }

    async fn load_all_digest_keys_in_range(
        &mut self,
        bucket: &str,
        prefix: Option<&str>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let marker = self.trail.marker(start, prefix);
        let list_prefix = self.trail.list_prefix(prefix);
        let store = self.stores.get(bucket).await?;
        let keys = store
            .list(&list_prefix, Some(&marker))
            .await
            .map_err(abort_error)?;
        let target_start = format_date(start);
        // One hour past the end, for log files that spilled over into the next digest.
        let target_end = format_date(end + Duration::hours(1));
        let (mut standard, mut backfill) = (Vec::new(), Vec::new());
        for key in keys {
            if key.is_empty() || !self.trail.key_matches(&key, prefix) {
                continue;
            }
            let date = extract_digest_key_date(&key);
            if date > target_end.as_str() {
                break;
            }
            if date < target_start.as_str() {
                continue;
            }
            if is_backfill_digest_key(&key) {
                backfill.push(key);
            } else {
                standard.push(key);
            }
        }
        Ok((standard, backfill))
    }

    /// `_load_public_keys`: the AWS CLI stops when ListPublicKeys returns nothing.
    fn load_public_keys(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> anyhow::Result<HashMap<String, Vec<u8>>> {
        let keys = self.keys.in_range(start, end);
        if keys.is_empty() {
            bail!(
                "No public keys found between {} and {}",
                format_display_date(start),
                format_display_date(end)
            );
        }
        Ok(keys)
    }

    /// `_get_last_digest`: the newest listed key, or the newest listed key older than
    /// `before_key` (popping the newer ones off the list, as the AWS CLI does).
    fn get_last_digest(
        digests: &mut Vec<String>,
        before_key: Option<&str>,
    ) -> anyhow::Result<(Option<String>, Option<DateTime<Utc>>)> {
        let Some(before_key) = before_key else {
            return match digests.pop() {
                None => Ok((None, None)),
                Some(k) => {
                    let d = parse_date(extract_digest_key_date(&k))?;
                    Ok((Some(k), Some(d)))
                }
            };
        };
        let before = parse_date(extract_digest_key_date(before_key))?;
        while let Some(k) = digests.pop() {
            let d = parse_date(extract_digest_key_date(&k))?;
            if d < before {
                return Ok((Some(k), Some(d)));
            }
        }
        Ok((None, None))
    }

    async fn traverse_digests(
        &mut self,
        starting_bucket: &str,
        prefix: Option<&str>,
        is_backfill: bool,
    ) -> anyhow::Result<()> {
        let start_date = self.start_time;
        let mut bucket = starting_bucket.to_string();
        let mut digests = self
            .load_digests(&bucket, prefix, start_date, self.end_time, is_backfill)
            .await?;
        let mut public_keys = if is_backfill {
            HashMap::new()
        } else {
            self.load_public_keys(start_date, self.end_time + Duration::hours(2))?
        };
        if !is_backfill && self.show_progress && !digests.is_empty() {
            let pb = indicatif::ProgressBar::with_draw_target(
                Some(digests.len() as u64),
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} digests {msg}",
            ) {
                pb.set_style(style);
            }
            self.progress = Some(pb);
        }

        let (mut key, mut end_date) = Self::get_last_digest(&mut digests, None)?;
        let mut last_start_date = end_date;
        while let (Some(k), Some(last_start)) = (key.clone(), last_start_date) {
            if start_date > last_start {
                break;
            }
            if let Some(pb) = &self.progress {
                pb.inc(1);
            }
            match self
                .load_and_validate_digest(&mut public_keys, &bucket, &k, is_backfill)
                .await
            {
                Ok((digest, digest_end, digest_start)) => {
                    end_date = Some(digest_end);
                    last_start_date = Some(digest_start);
                    let previous_bucket = digest
                        .get("previousDigestS3Bucket")
                        .filter(|v| !v.is_null());
                    let previous_key = digest
                        .get("previousDigestS3Object")
                        .filter(|v| !v.is_null());
                    let previous = match (previous_bucket, previous_key) {
                        (Some(b), Some(k)) => Some((py_str(Some(b)), py_str(Some(k)))),
                        _ => None,
                    };
                    self.on_valid_digest(&digest, is_backfill).await?;
                    match previous {
                        None => {
                            // The chain restarts here; carry on with the next older listed key.
                            let (next_key, next_end) =
                                Self::get_last_digest(&mut digests, Some(&k))?;
                            if let (Some(_), Some(next_end)) = (&next_key, next_end) {
                                self.on_digest_gap(next_end, digest_start, is_backfill);
                            }
                            key = next_key;
                            end_date = next_end;
                        }
                        Some((previous_bucket, previous_key)) => {
                            key = Some(previous_key);
                            if previous_bucket != bucket {
                                bucket = previous_bucket;
                                let end = end_date.expect("set above");
                                digests = self
                                    .load_digests(&bucket, prefix, start_date, end, is_backfill)
                                    .await?;
                            }
                        }
                    }
                }
                Err(DigestFailure::Abort(e)) => return Err(e),
                Err(failure) => {
                    let (next_key, next_end) = Self::get_last_digest(&mut digests, Some(&k))?;
                    match failure {
                        DigestFailure::Missing => self.on_missing_digest(&bucket, &k, is_backfill),
                        DigestFailure::Invalid(message) => {
                            self.on_invalid_digest(&message, is_backfill)
                        }
                        DigestFailure::Abort(_) => unreachable!(),
                    }
                    key = next_key;
                    end_date = next_end;
                }
            }
        }
        let _ = end_date;
        Ok(())
    }

    /// `fetch_digest` + `_load_and_validate_digest` + `Sha256RSADigestValidator.validate`, in
    /// the AWS CLI's order. Returns the digest with its end and start times.
    async fn load_and_validate_digest(
        &mut self,
        public_keys: &mut HashMap<String, Vec<u8>>,
        bucket: &str,
        key: &str,
        is_backfill: bool,
    ) -> Result<(serde_json::Map<String, Value>, DateTime<Utc>, DateTime<Utc>), DigestFailure> {
        let invalid = |what: &str| {
            DigestFailure::Invalid(format!("Digest file\ts3://{bucket}/{key}\tINVALID: {what}"))
        };
        // 1. get_object; gunzip (first member only) and JSON.
        let store = self
            .stores
            .get(bucket)
            .await
            .map_err(DigestFailure::Abort)?;
        let object = match store.get(key).await {
            Ok(Some(o)) => o,
            Ok(None) => return Err(DigestFailure::Missing),
            Err(e @ DestinationError::Refused { .. }) => {
                return Err(DigestFailure::Abort(e.into()));
            }
            Err(e) => return Err(invalid(&e.to_string())),
        };
        let inflated = gunzip_first_member(&object.body).map_err(|_| invalid("invalid format"))?;
        let data: Value = std::str::from_utf8(&inflated)
            .ok()
            .and_then(|t| serde_json::from_str(t).ok())
            .ok_or_else(|| invalid("invalid format"))?;
        // 2. The signature lives in the object's metadata.
        let md = &object.metadata;
        let Some(signature) = md
            .get("signature")
            .filter(|_| md.contains_key("signature-algorithm"))
        else {
            return Err(invalid("signature verification failed"));
        };
        let digest = match data {
            Value::Object(m) => m,
            // Python fails assigning `_signature` into a non-dict; its message is the status.
            Value::Array(_) => {
                return Err(invalid("list indices must be integers or slices, not str"));
            }
            other => {
                let t = match other {
                    Value::String(_) => "str",
                    Value::Bool(_) => "bool",
                    Value::Null => "NoneType",
                    Value::Number(n) if n.is_f64() => "float",
                    _ => "int",
                };
                return Err(invalid(&format!(
                    "'{t}' object does not support item assignment"
                )));
            }
        };
        let backfill_timestamp = if is_backfill_digest_key(key) {
            match md.get("backfill-generation-timestamp") {
                Some(t) => Some(t.clone()),
                None => return Err(invalid("invalid format")),
            }
        } else {
            None
        };
        // 3. Required members.
        for required in [
            "digestPublicKeyFingerprint",
            "digestS3Bucket",
            "digestS3Object",
            "previousDigestSignature",
            "digestEndTime",
            "digestStartTime",
        ] {
            if !digest.contains_key(required) {
                return Err(invalid("invalid format"));
            }
        }
        // 4. Where it was read must be where it was written.
        if digest["digestS3Bucket"].as_str() != Some(bucket)
            || digest["digestS3Object"].as_str() != Some(key)
        {
            return Err(invalid("has been moved from its original location"));
        }
        // 5. The signing key must be known.
        let fp_value = &digest["digestPublicKeyFingerprint"];
        let fp = fp_value.as_str().unwrap_or_default().to_string();
        let known =
            |keys: &HashMap<String, Vec<u8>>| fp_value.is_string() && keys.contains_key(&fp);
        if !known(public_keys) && is_backfill {
            let ts = backfill_timestamp.unwrap_or_default();
            let at = parse_date(&ts).map_err(|e| invalid(&e.to_string()))?;
            let more = self
                .load_public_keys(at - Duration::hours(1), at + Duration::hours(1))
                .map_err(|e| invalid(&e.to_string()))?;
            public_keys.extend(more);
        }
        if !known(public_keys) {
            return Err(invalid(&format!(
                "public key not found in region {} for fingerprint {}",
                self.trail.home_region,
                py_str(Some(fp_value))
            )));
        }
        // 6. SHA256withRSA over the signing string.
        let der = &public_keys[&fp];
        if !is_pkcs1_rsa_public_key(der) {
            return Err(invalid(&format!(
                "Unable to load PKCS #1 key with fingerprint {fp}"
            )));
        }
        let previous_signature = match digest.get("previousDigestSignature") {
            None | Some(Value::Null) => "null".to_string(),
            v => py_str(v),
        };
        let to_sign = format!(
            "{}\n{}/{}\n{}\n{}",
            py_str(digest.get("digestEndTime")),
            py_str(digest.get("digestS3Bucket")),
            py_str(digest.get("digestS3Object")),
            sha256_hex(&inflated),
            previous_signature
        );
        if signature.len() % 2 != 0 {
            return Err(invalid("Odd-length string"));
        }
        if !signature.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid("Non-hexadecimal digit found"));
        }
        if !verify_signature(der, to_sign.as_bytes(), signature) {
            return Err(invalid("signature verification failed"));
        }
        let end = parse_date(&py_str(digest.get("digestEndTime")))
            .map_err(|e| invalid(&e.to_string()))?;
        let start = parse_date(&py_str(digest.get("digestStartTime")))
            .map_err(|e| invalid(&e.to_string()))?;
        Ok((digest, end, start))
    }

    /// A digest passed: count it, report it, check its log files.
    async fn on_valid_digest(
        &mut self,
        digest: &serde_json::Map<String, Value>,
        is_backfill: bool,
    ) -> anyhow::Result<()> {
        // _track_found_times (both parse: the digest was validated with them).
        if let (Ok(s), Ok(e)) = (
            parse_date(&py_str(digest.get("digestStartTime"))),
            parse_date(&py_str(digest.get("digestEndTime"))),
        ) {
            let earliest = s.max(self.start_time);
            if self.found_start_time.is_none_or(|f| earliest < f) {
                self.found_start_time = Some(earliest);
            }
            let latest = e.min(self.end_time);
            if self.found_end_time.is_none_or(|f| latest > f) {
                self.found_end_time = Some(latest);
            }
        }
        if is_backfill {
            self.counts.valid_backfill_digests += 1;
        } else {
            self.counts.valid_digests += 1;
        }
        let status = format!(
            "{}Digest file\ts3://{}/{}\tvalid",
            if is_backfill { "(backfill) " } else { "" },
            py_str(digest.get("digestS3Bucket")),
            py_str(digest.get("digestS3Object"))
        );
        self.write_status(&status, false);
        if let Some(Value::Array(logs)) = digest.get("logFiles") {
            for log in logs {
                self.download_log(log).await?;
            }
        }
        Ok(())
    }

    /// `_download_log`: inflate, refuse trailing data, compare SHA-256.
    async fn download_log(&mut self, log: &Value) -> anyhow::Result<()> {
        let bucket = py_str(log.get("s3Bucket"));
        let key = py_str(log.get("s3Object"));
        // A store that refuses (the AWS CLI re-raises ClientErrors other than NoSuchKey) ends
        // the run; any other failure to read is "invalid format", as there.
        let store = self.stores.get(&bucket).await?;
        let problem = match store.get(&key).await {
            Ok(None) => Some("not found"),
            Err(e @ DestinationError::Refused { .. }) => return Err(e.into()),
            Err(_) => Some("invalid format"),
            Ok(Some(object)) => match inflate_sha256(&object.body) {
                Inflated::Trailing => Some("unexpected data after end of compressed stream"),
                Inflated::Corrupt => Some("invalid format"),
                Inflated::Hash(h) => match log.get("hashValue") {
                    None => Some("invalid format"),
                    Some(v) if v.as_str() == Some(h.as_str()) => None,
                    Some(_) => Some("hash value doesn't match"),
                },
            },
        };
        match problem {
            None => {
                self.counts.valid_logs += 1;
                self.write_status(&format!("Log file\ts3://{bucket}/{key}\tvalid"), false);
            }
            Some(what) => {
                self.counts.invalid_logs += 1;
                self.write_status(
                    &format!("Log file\ts3://{bucket}/{key}\tINVALID: {what}"),
                    true,
                );
            }
        }
        if let Some(pb) = &self.progress {
            let c = self.counts;
            pb.set_message(format!("{} log files", c.valid_logs + c.invalid_logs));
        }
        Ok(())
    }

    fn on_missing_digest(&mut self, bucket: &str, last_key: &str, is_backfill: bool) {
        if is_backfill {
            self.counts.invalid_backfill_digests += 1;
        } else {
            self.counts.invalid_digests += 1;
        }
        let kind = if is_backfill { "(backfill) " } else { "" };
        self.write_status(
            &format!("{kind}Digest file\ts3://{bucket}/{last_key}\tINVALID: not found"),
            true,
        );
    }

    fn on_invalid_digest(&mut self, message: &str, is_backfill: bool) {
        if is_backfill {
            self.counts.invalid_backfill_digests += 1;
        } else {
            self.counts.invalid_digests += 1;
        }
        let kind = if is_backfill { "(backfill) " } else { "" };
        self.write_status(&format!("{kind}{message}"), true);
    }

    fn on_digest_gap(
        &mut self,
        next_end: DateTime<Utc>,
        last_start: DateTime<Utc>,
        is_backfill: bool,
    ) {
        let kind = if is_backfill { "(backfill) " } else { "" };
        self.write_status(
            &format!(
                "{kind}No log files were delivered by CloudTrail between {} and {}",
                format_display_date(next_end),
                format_display_date(last_start)
            ),
            true,
        );
    }
}

fn abort_error(e: DestinationError) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// `zlib.decompress(body, MAX_WBITS | 16)`: the first gzip member, complete and intact; what
/// follows it is ignored (the AWS CLI does so for digests).
fn gunzip_first_member(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::bufread::GzDecoder::new(body).read_to_end(&mut out)?;
    Ok(out)
}

enum Inflated {
    /// SHA-256 (hex) of the inflated bytes.
    Hash(String),
    /// Bytes follow the first gzip member.
    Trailing,
    /// Not gzip, or a corrupt stream or checksum.
    Corrupt,
}

/// How the AWS CLI reads a log file: a streaming gzip inflater over the first member; bytes after
/// it are "unexpected data"; a truncated stream is not an error there (its partial output then
/// fails the hash comparison), a corrupt one is.
fn inflate_sha256(body: &[u8]) -> Inflated {
    // zlib refuses a wrong magic, method or reserved flag as soon as it sees the byte, even in
    // a body too short for a whole header (flate2 would only report the short header).
    const HEADER: [u8; 3] = [0x1f, 0x8b, 0x08];
    if body.iter().zip(HEADER).any(|(&b, h)| b != h) || body.get(3).is_some_and(|f| f & 0xe0 != 0) {
        return Inflated::Corrupt;
    }
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut decoder = flate2::bufread::GzDecoder::new(body);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => ctx.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Inflated::Hash(hex::encode(ctx.finish()));
            }
            Err(_) => return Inflated::Corrupt,
        }
    }
    if !decoder.into_inner().is_empty() {
        return Inflated::Trailing;
    }
    Inflated::Hash(hex::encode(ctx.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::Metadata;
    use crate::destination::local::LocalDestination;
    use bytes::Bytes;
    use groundtrail_common::time::{json_time, parse_json_time};
    use groundtrail_common::trail::{DigestDocument, DigestLogFile, TrailLayout};

    const ACCOUNT: &str = "111122223333";
    const REGION: &str = "us-east-1";
    const TRAIL: &str = "gt-trail";
    const BUCKET: &str = "test-bucket";
    const ARN: &str = "arn:aws:cloudtrail:us-east-1:111122223333:trail/gt-trail";

    fn t(s: &str) -> DateTime<Utc> {
        parse_json_time(s).unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// A trail written the way the collector writes it, into a real local destination.
    struct Fixture {
        dir: tempfile::TempDir,
        dest: LocalDestination,
        key: SigningKey,
        layout: TrailLayout,
        /// Previous digest: (key, signature, sha256 of its bytes).
        prev: Option<(String, String, String)>,
        digests: Vec<String>,
        logs: Vec<String>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let dest = LocalDestination::open("t".into(), &dir.path().join("trail"), BUCKET.into())
                .unwrap();
            Fixture {
                dir,
                dest,
                key: SigningKey::generate().unwrap(),
                layout: TrailLayout::default(),
                prev: None,
                digests: vec![],
                logs: vec![],
            }
        }

        async fn log(&mut self, at: DateTime<Utc>, n: usize) -> DigestLogFile {
            let records: Vec<Value> = (0..n)
                .map(|i| {
                    serde_json::json!({
                        "eventVersion": "1.11",
                        "eventTime": json_time(at),
                        "eventSource": "sshd.onprem.internal",
                        "eventName": "ConsoleLogin",
                        "awsRegion": REGION,
                        "eventID": uuid::Uuid::new_v4().to_string(),
                        "recipientAccountId": ACCOUNT,
                        "n": i,
                    })
                })
                .collect();
            let body = serde_json::to_vec(&serde_json::json!({ "Records": records })).unwrap();
            let key = self.layout.log_file_key(
                ACCOUNT,
                REGION,
                at,
                &groundtrail_common::trail::unique16(),
            );
            self.dest
                .put(&key, Bytes::from(gzip(&body)), &Metadata::new())
                .await
                .unwrap();
            self.logs.push(key.clone());
            DigestLogFile {
                s3_bucket: BUCKET.into(),
                s3_object: key,
                hash_value: sha256_hex(&body),
                hash_algorithm: "SHA-256".into(),
                newest_event_time: json_time(at),
                oldest_event_time: json_time(at),
            }
        }

        /// Writes a digest for [start, end]; `restart` begins a new chain.
        async fn digest(
            &mut self,
            start: &str,
            end: &str,
            logs: Vec<DigestLogFile>,
            restart: bool,
        ) -> String {
            let end_t = t(end);
            let key = self
                .layout
                .digest_key(ACCOUNT, REGION, TRAIL, REGION, end_t, false);
            let prev = if restart { None } else { self.prev.clone() };
            let mut doc = DigestDocument {
                aws_account_id: ACCOUNT.into(),
                digest_start_time: start.into(),
                digest_end_time: end.into(),
                digest_s3_bucket: BUCKET.into(),
                digest_s3_object: key.clone(),
                digest_public_key_fingerprint: self.key.fingerprint().into(),
                digest_signature_algorithm: "SHA256withRSA".into(),
                newest_event_time: None,
                oldest_event_time: None,
                previous_digest_s3_bucket: prev.as_ref().map(|_| BUCKET.to_string()),
                previous_digest_s3_object: prev.as_ref().map(|p| p.0.clone()),
                previous_digest_hash_value: prev.as_ref().map(|p| p.2.clone()),
                previous_digest_hash_algorithm: prev.as_ref().map(|_| "SHA-256".to_string()),
                previous_digest_signature: prev.as_ref().map(|p| p.1.clone()),
                log_files: logs,
            };
            doc.set_event_time_bounds();
            let signed = doc.sign(&self.key).unwrap();
            let (bytes, hash, sig) = (signed.bytes, signed.sha256, signed.signature);
            let mut md = Metadata::new();
            md.insert("signature".into(), sig.clone());
            md.insert("signature-algorithm".into(), "SHA256withRSA".into());
            self.dest
                .put(&key, Bytes::from(gzip(&bytes)), &md)
                .await
                .unwrap();
            self.prev = Some((key.clone(), sig, hash));
            self.digests.push(key.clone());
            key
        }

        /// Three hourly digests with two, zero and one log files.
        async fn standard() -> Fixture {
            let mut f = Fixture::new();
            let a = f.log(t("2026-01-01T00:10:00Z"), 3).await;
            let b = f.log(t("2026-01-01T00:40:00Z"), 2).await;
            f.digest(
                "2026-01-01T00:00:00Z",
                "2026-01-01T01:00:00Z",
                vec![a, b],
                true,
            )
            .await;
            f.digest(
                "2026-01-01T01:00:00Z",
                "2026-01-01T02:00:00Z",
                vec![],
                false,
            )
            .await;
            let c = f.log(t("2026-01-01T02:30:00Z"), 1).await;
            f.digest(
                "2026-01-01T02:00:00Z",
                "2026-01-01T03:00:00Z",
                vec![c],
                false,
            )
            .await;
            f
        }

        fn path(&self, key: &str) -> PathBuf {
            self.dir.path().join("trail").join(key)
        }

        fn public_key_file(&self) -> PathBuf {
            let p = self.dir.path().join("public.pem");
            std::fs::write(&p, self.key.public_key_pem()).unwrap();
            p
        }

        fn args(&self) -> Args {
            Args {
                trail_arn: ARN.into(),
                start_time: "2026-01-01T00:00:00Z".into(),
                end_time: Some("2026-01-01T03:30:00Z".into()),
                s3_bucket: Some(BUCKET.into()),
                local_dir: Some(self.dir.path().join("trail")),
                public_keys: vec![self.public_key_file()],
                s3_region: "us-east-1".into(),
                ..Args::default()
            }
        }

        async fn validate_with(&self, args: Args) -> (i32, String, String) {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = match run_inner(args, &mut out, &mut err, false).await {
                Ok(c) => c,
                Err(e) => {
                    write!(err, "\n{e:#}\n").unwrap();
                    255
                }
            };
            (
                code,
                String::from_utf8(out).unwrap(),
                String::from_utf8(err).unwrap(),
            )
        }

        async fn validate(&self) -> (i32, String, String) {
            self.validate_with(self.args()).await
        }
    }

    fn line(kind: &str, key: &str, status: &str) -> String {
        format!("{kind} file\ts3://{BUCKET}/{key}\t{status}")
    }

    #[tokio::test]
    async fn valid_chain_passes_with_the_aws_cli_text() {
        let f = Fixture::standard().await;
        let mut args = f.args();
        args.verbose = true;
        let (code, out, err) = f.validate_with(args).await;
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(err, "");
        let mut expected = format!(
            "Validating log files for trail {ARN} between 2026-01-01T00:00:00Z and 2026-01-01T03:30:00Z\n\n"
        );
        // Newest digest first, each followed by its log files.
        expected += &(line("Digest", &f.digests[2], "valid") + "\n");
        expected += &(line("Log", &f.logs[2], "valid") + "\n");
        expected += &(line("Digest", &f.digests[1], "valid") + "\n");
        expected += &(line("Digest", &f.digests[0], "valid") + "\n");
        expected += &(line("Log", &f.logs[0], "valid") + "\n");
        expected += &(line("Log", &f.logs[1], "valid") + "\n");
        expected += "\nResults requested for 2026-01-01T00:00:00Z to 2026-01-01T03:30:00Z\n";
        expected += "Results found for 2026-01-01T00:00:00Z to 2026-01-01T03:00:00Z:\n";
        expected += "\n3/3 digest files valid\n3/3 log files valid\n";
        assert_eq!(out, expected);

        // Without --verbose: only the summary.
        let (code, out, err) = f.validate().await;
        assert_eq!((code, err.as_str()), (0, ""));
        assert!(
            out.ends_with("Results found for 2026-01-01T00:00:00Z to 2026-01-01T03:00:00Z:\n\n3/3 digest files valid\n3/3 log files valid\n"),
            "{out}"
        );
        assert!(!out.contains("\tvalid"));
    }

    #[tokio::test]
    async fn tampered_log_is_named() {
        let f = Fixture::standard().await;
        std::fs::write(f.path(&f.logs[1]), gzip(b"{\"Records\":[]}")).unwrap();
        let (code, out, err) = f.validate().await;
        assert_eq!(code, 1);
        assert_eq!(
            err,
            line("Log", &f.logs[1], "INVALID: hash value doesn't match") + "\n\n"
        );
        assert!(
            out.ends_with("\n3/3 digest files valid\n2/3 log files valid, 1/3 log files INVALID\n"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn deleted_log_is_named() {
        let f = Fixture::standard().await;
        std::fs::remove_file(f.path(&f.logs[0])).unwrap();
        let (code, out, err) = f.validate().await;
        assert_eq!(code, 1);
        assert_eq!(err, line("Log", &f.logs[0], "INVALID: not found") + "\n\n");
        assert!(
            out.contains("2/3 log files valid, 1/3 log files INVALID"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn log_damage_kinds() {
        let f = Fixture::standard().await;
        // A second gzip member after the first.
        let mut two = std::fs::read(f.path(&f.logs[0])).unwrap();
        two.extend(gzip(b"more"));
        std::fs::write(f.path(&f.logs[0]), two).unwrap();
        // Not gzip at all (shorter than a gzip header: zlib still refuses the magic).
        std::fs::write(f.path(&f.logs[2]), b"not gzip").unwrap();
        let (code, _out, err) = f.validate().await;
        assert_eq!(code, 1);
        assert_eq!(
            err,
            line("Log", &f.logs[2], "INVALID: invalid format")
                + "\n\n"
                + &line(
                    "Log",
                    &f.logs[0],
                    "INVALID: unexpected data after end of compressed stream"
                )
                + "\n\n"
        );
    }

    #[tokio::test]
    async fn tampered_digest_fails_its_signature_and_the_walk_goes_on() {
        let f = Fixture::standard().await;
        let path = f.path(&f.digests[1]);
        let mut doc: Value =
            serde_json::from_slice(&gunzip_first_member(&std::fs::read(&path).unwrap()).unwrap())
                .unwrap();
        doc["newestEventTime"] = Value::String("2026-01-01T01:30:00Z".into());
        std::fs::write(&path, gzip(&serde_json::to_vec(&doc).unwrap())).unwrap();
        let (code, out, err) = f.validate().await;
        assert_eq!(code, 1);
        assert_eq!(
            err,
            line(
                "Digest",
                &f.digests[1],
                "INVALID: signature verification failed"
            ) + "\n\n"
        );
        assert!(
            out.contains(
                "\n2/3 digest files valid, 1/3 digest files INVALID\n3/3 log files valid\n"
            ),
            "{out}"
        );
    }

    #[tokio::test]
    async fn deleted_digest_is_named() {
        let f = Fixture::standard().await;
        std::fs::remove_file(f.path(&f.digests[1])).unwrap();
        let (code, out, err) = f.validate().await;
        assert_eq!(code, 1);
        assert_eq!(
            err,
            line("Digest", &f.digests[1], "INVALID: not found") + "\n\n"
        );
        assert!(
            out.contains(
                "\n2/3 digest files valid, 1/3 digest files INVALID\n3/3 log files valid\n"
            ),
            "{out}"
        );
    }

    #[tokio::test]
    async fn moved_digest_is_named() {
        let f = Fixture::standard().await;
        // Move the newest digest one second later (same folder, another name).
        let from = f.path(&f.digests[2]);
        let moved_key = f.digests[2].replace("T030000Z", "T030001Z");
        std::fs::rename(&from, f.path(&moved_key)).unwrap();
        std::fs::rename(
            format!("{}.metadata.json", from.display()),
            format!("{}.metadata.json", f.path(&moved_key).display()),
        )
        .unwrap();
        let (code, out, err) = f.validate().await;
        assert_eq!(code, 1);
        assert_eq!(
            err,
            line(
                "Digest",
                &moved_key,
                "INVALID: has been moved from its original location"
            ) + "\n\n"
        );
        // Its log file is not checked (only logs of valid digests are); the older two are.
        assert!(
            out.contains(
                "\n2/3 digest files valid, 1/3 digest files INVALID\n2/2 log files valid\n"
            ),
            "{out}"
        );
    }

    #[tokio::test]
    async fn missing_signature_and_unknown_key() {
        let f = Fixture::standard().await;
        std::fs::write(
            format!("{}.metadata.json", f.path(&f.digests[2]).display()),
            b"{}",
        )
        .unwrap();
        let (code, _out, err) = f.validate().await;
        assert_eq!(code, 1);
        assert_eq!(
            err,
            line(
                "Digest",
                &f.digests[2],
                "INVALID: signature verification failed"
            ) + "\n\n"
        );

        let other = SigningKey::generate().unwrap();
        let p = f.dir.path().join("other.pem");
        std::fs::write(&p, other.public_key_pem()).unwrap();
        let mut args = f.args();
        args.public_keys = vec![p];
        let (code, out, err) = f.validate_with(args).await;
        assert_eq!(code, 1);
        let unknown = format!(
            "INVALID: public key not found in region us-east-1 for fingerprint {}",
            f.key.fingerprint()
        );
        assert!(
            err.contains(&line("Digest", &f.digests[1], &unknown)),
            "{err}"
        );
        assert!(out.contains("No valid digests found in range\n\n0/3 digest files valid, 3/3 digest files INVALID\n"), "{out}");
    }

    #[tokio::test]
    async fn no_digests_and_gaps() {
        let f = Fixture::new();
        let (code, out, err) = f.validate().await;
        assert_eq!((code, err.as_str()), (0, ""));
        assert!(
            out.ends_with("to 2026-01-01T03:30:00Z\nNo digests found\n"),
            "{out}"
        );

        // Two chains: the second restarts after a stop.
        let mut f = Fixture::new();
        f.digest("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", vec![], true)
            .await;
        f.digest("2026-01-01T02:00:00Z", "2026-01-01T03:00:00Z", vec![], true)
            .await;
        let (code, out, err) = f.validate().await;
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(
            err,
            "No log files were delivered by CloudTrail between 2026-01-01T01:00:00Z and 2026-01-01T02:00:00Z\n\n"
        );
        assert!(out.contains("\n2/2 digest files valid\n"), "{out}");
    }

    #[tokio::test]
    async fn window_and_setup_errors() {
        let f = Fixture::standard().await;
        // Only the last hour: the newest digest and, through its link, the one before it
        // (the AWS CLI follows the chain while the requested start <= the digest's start).
        let mut args = f.args();
        args.start_time = "2026-01-01T02:00:00Z".into();
        let (code, out, _) = f.validate_with(args).await;
        assert_eq!(code, 0);
        assert!(
            out.contains("\n2/2 digest files valid\n1/1 log files valid\n"),
            "{out}"
        );

        let mut args = f.args();
        args.trail_arn = "arn:aws:cloudtrail:us-east-1:1111:trail/x".into();
        let (code, _, err) = f.validate_with(args).await;
        assert_eq!(code, 255);
        assert!(err.contains("Invalid trail ARN provided"), "{err}");

        let mut args = f.args();
        args.start_time = "2026-01-02T00:00:00Z".into();
        let (code, _, err) = f.validate_with(args).await;
        assert_eq!(code, 255);
        assert!(
            err.contains("start-time must occur before end-time"),
            "{err}"
        );
    }

    #[test]
    fn parsing_helpers() {
        assert!(assert_cloudtrail_arn_is_valid(ARN).is_ok());
        assert!(
            assert_cloudtrail_arn_is_valid(
                "arn:aws-cn:cloudtrail:cn-north-1:123456789012:trail/a/b"
            )
            .is_ok()
        );
        for bad in [
            "arn:aws:cloudtrail:us-east-1:12345678901:trail/x",
            "arn:aws:cloudtrail:us-east-1:123456789012:trail/",
            "aws:cloudtrail:us-east-1:123456789012:trail/x",
        ] {
            assert!(assert_cloudtrail_arn_is_valid(bad).is_err(), "{bad}");
        }
        let want = t("2026-01-01T05:06:07Z");
        for s in [
            "2026-01-01T05:06:07Z",
            "2026-01-01T05:06:07",
            "2026-01-01 05:06:07",
            "2026-01-01T05:06:07.250Z",
            "2026-01-01T05:06:07+02:00",
            "20260101T050607Z",
        ] {
            let got = parse_date(s).unwrap();
            assert_eq!(format_display_date(got), format_display_date(want), "{s}");
        }
        assert_eq!(parse_date("2026-01-01").unwrap(), t("2026-01-01T00:00:00Z"));
        assert!(parse_date("yesterday").is_err());
        assert_eq!(
            extract_digest_key_date("a_20260101T050607Z.json.gz"),
            "20260101T050607Z"
        );
        assert_eq!(
            extract_digest_key_date("a_20260101T050607Z_backfill.json.gz"),
            "20260101T050607Z"
        );
        let key = SigningKey::generate().unwrap();
        assert!(is_pkcs1_rsa_public_key(key.public_key_der()));
        assert!(!is_pkcs1_rsa_public_key(b"\x30\x00"));
    }
}
