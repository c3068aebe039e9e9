//! The two validators a trail must satisfy: `groundtrail-collector validate-logs` and the
//! unmodified `aws cloudtrail validate-logs` (awscli 1.x), whose runs are read into a
//! [`Validation`].

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::REGION;
use crate::cloudtrail_stub::CloudTrailStub;
use crate::env::bin;

/// The result of a validate-logs run.
#[derive(Debug, Clone)]
pub struct Validation {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Validation {
    fn from(out: Output) -> Validation {
        Validation {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `(valid, total)` from the "N/M digest files valid" summary line; `(0, 0)` when none.
    pub fn digests(&self) -> (usize, usize) {
        summary_ratio(&self.stdout, "digest")
    }

    /// `(valid, total)` from the "N/M log files valid" summary line.
    pub fn logs(&self) -> (usize, usize) {
        summary_ratio(&self.stdout, "log")
    }

    /// The `INVALID` status lines (stderr), in order.
    pub fn invalid_lines(&self) -> Vec<String> {
        self.stderr
            .lines()
            .filter(|l| l.contains("\tINVALID: "))
            .map(str::to_string)
            .collect()
    }

    /// Panics unless the run passed and found digests and log files (the AWS CLI exits 0 on
    /// "No digests found", so the code alone proves nothing).
    pub fn assert_valid(&self, what: &str) {
        let (dv, dt) = self.digests();
        let (lv, lt) = self.logs();
        assert!(
            self.code == 0 && dt > 0 && dv == dt && lt > 0 && lv == lt && self.stderr.is_empty(),
            "{what}: expected a valid trail with digests and logs, got exit {} ({dv}/{dt} digests, {lv}/{lt} logs)\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
    }
}

fn summary_ratio(stdout: &str, name: &str) -> (usize, usize) {
    let suffix = format!(" {name} files valid");
    for line in stdout.lines() {
        let head = line.split(',').next().unwrap_or("");
        if let Some(ratio) = head.strip_suffix(&suffix)
            && let Some((v, t)) = ratio.split_once('/')
            && let (Ok(v), Ok(t)) = (v.parse(), t.parse())
        {
            return (v, t);
        }
    }
    (0, 0)
}

/// Runs `groundtrail-collector validate-logs <args>`.
pub fn groundtrail_validate(args: &[String]) -> Validation {
    let out = Command::new(bin("groundtrail-collector"))
        .arg("validate-logs")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .output()
        .expect("run groundtrail-collector validate-logs");
    Validation::from(out)
}

/// The time window arguments shared by both validators: from `start` to now + 1 minute.
pub fn window(start: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    vec![
        "--start-time".into(),
        fmt(start - chrono::Duration::minutes(5)),
        "--end-time".into(),
        fmt(chrono::Utc::now() + chrono::Duration::minutes(1)),
    ]
}

/// Runs the unmodified `aws cloudtrail validate-logs <args>` with its CloudTrail client at
/// `cloudtrail` (a [`CloudTrailStub`]) and its S3 client at `s3_endpoint`.
pub fn aws_validate(
    aws: &Path,
    cloudtrail: &CloudTrailStub,
    s3_endpoint: &str,
    args: &[String],
) -> Validation {
    aws_validate_at(aws, &cloudtrail.url(), s3_endpoint, args)
}

/// Runs the unmodified `aws cloudtrail validate-logs <args>` with its CloudTrail client at
/// `cloudtrail_url` (e.g. the collector itself) and its S3 client at `s3_endpoint`.
pub fn aws_validate_at(
    aws: &Path,
    cloudtrail_url: &str,
    s3_endpoint: &str,
    args: &[String],
) -> Validation {
    aws_validate_signed(
        aws,
        cloudtrail_url,
        s3_endpoint,
        args,
        ("testing", "testing"),
    )
}

/// [`aws_validate_at`] signing with `key` (an access key id and its secret), for a collector
/// whose API takes only its configured keys.
pub fn aws_validate_signed(
    aws: &Path,
    cloudtrail_url: &str,
    s3_endpoint: &str,
    args: &[String],
    key: (&str, &str),
) -> Validation {
    let mut cmd = Command::new(aws);
    cmd.args([
        "cloudtrail",
        "validate-logs",
        "--region",
        REGION,
        "--endpoint-url",
    ])
    .arg(cloudtrail_url)
    .args(args)
    .env("AWS_ENDPOINT_URL_S3", s3_endpoint)
    .env("AWS_ENDPOINT_URL_ORGANIZATIONS", cloudtrail_url);
    let out = isolated(&mut cmd, key.0, key.1)
        .output()
        .expect("run aws cloudtrail validate-logs");
    Validation::from(out)
}

/// Runs the unmodified `aws <args>` with the given credentials (no config files, no profile,
/// nothing that could reach AWS) and returns its output.
pub fn aws_run(aws: &Path, args: &[&str], access_key_id: &str, secret: &str) -> Output {
    let mut cmd = Command::new(aws);
    cmd.args(args);
    isolated(&mut cmd, access_key_id, secret)
        .output()
        .expect("run aws")
}

/// `cmd` (the AWS CLI) with these credentials and nothing else of the environment's AWS
/// settings: no config files, no profile, no session token, no instance metadata.
fn isolated<'a>(cmd: &'a mut Command, access_key_id: &str, secret: &str) -> &'a mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .stdin(Stdio::null())
}
