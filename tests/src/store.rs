//! Reading a trail back from where the collector delivered it: a local destination's directory
//! or a bucket on the S3-compatible test server; and writing objects into it for the tests that
//! damage a trail on purpose.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::readiness::wait_for;

/// A trail's bucket: a local destination's directory or an S3 bucket.
#[derive(Clone)]
pub enum Store {
    Local(PathBuf),
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
}

/// An S3 client for a test S3 server (any credentials, path-style).
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A bucket name unique to this test run.
pub fn unique_bucket(test: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut name: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    name.push('-');
    name.push_str(&id[..12]);
    name
}

/// Creates `bucket` on the S3 server at `endpoint` and returns its [`Store`].
pub async fn create_bucket(endpoint: &str, bucket: &str) -> Store {
    let client = s3_client(endpoint);
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}"));
    Store::S3 {
        client,
        bucket: bucket.to_string(),
    }
}

/// User metadata, keys without `x-amz-meta-`.
pub type Metadata = BTreeMap<String, String>;

const METADATA_SUFFIX: &str = ".metadata.json";

impl Store {
    /// Every key in the bucket, sorted.
    pub async fn keys(&self) -> Vec<String> {
        match self {
            Store::Local(root) => {
                let mut keys = Vec::new();
                walk(root, root, &mut keys);
                keys.retain(|k| !k.ends_with(METADATA_SUFFIX) && !k.contains(".gt-tmp-"));
                keys.sort();
                keys
            }
            Store::S3 { client, bucket } => {
                let mut keys = Vec::new();
                let mut token = None;
                loop {
                    let resp = client
                        .list_objects_v2()
                        .bucket(bucket)
                        .set_continuation_token(token)
                        .send()
                        .await
                        .expect("list objects");
                    keys.extend(
                        resp.contents()
                            .iter()
                            .filter_map(|o| o.key().map(str::to_string)),
                    );
                    token = resp.next_continuation_token().map(str::to_string);
                    if token.is_none() {
                        break;
                    }
                }
                keys.sort();
                keys
            }
        }
    }

    /// An object and its metadata.
    pub async fn get(&self, key: &str) -> Option<(Vec<u8>, Metadata)> {
        match self {
            Store::Local(root) => {
                let body = std::fs::read(root.join(key)).ok()?;
                let md = std::fs::read(root.join(format!("{key}{METADATA_SUFFIX}")))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
                Some((body, md))
            }
            Store::S3 { client, bucket } => {
                let resp = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .ok()?;
                let md: Metadata = resp
                    .metadata()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                let body = resp.body.collect().await.ok()?.into_bytes().to_vec();
                Some((body, md))
            }
        }
    }

    /// Replaces an object (keeping the given metadata).
    pub async fn put(&self, key: &str, body: Vec<u8>, metadata: &Metadata) {
        match self {
            Store::Local(root) => {
                let path = root.join(key);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(&path, body).expect("write object");
                std::fs::write(
                    root.join(format!("{key}{METADATA_SUFFIX}")),
                    serde_json::to_vec(metadata).expect("JSON"),
                )
                .expect("write metadata");
            }
            Store::S3 { client, bucket } => {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .set_metadata(Some(
                        metadata.clone().into_iter().collect::<HashMap<_, _>>(),
                    ))
                    .body(body.into())
                    .send()
                    .await
                    .expect("put object");
            }
        }
    }

    /// Deletes an object (and, locally, its metadata).
    pub async fn delete(&self, key: &str) {
        match self {
            Store::Local(root) => {
                std::fs::remove_file(root.join(key)).expect("delete object");
                let _ = std::fs::remove_file(root.join(format!("{key}{METADATA_SUFFIX}")));
            }
            Store::S3 { client, bucket } => {
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .expect("delete object");
            }
        }
    }

    /// Keys of log files (`.../CloudTrail/...`).
    pub async fn log_keys(&self) -> Vec<String> {
        let mut keys = self.keys().await;
        keys.retain(|k| k.contains("/CloudTrail/") && k.ends_with(".json.gz"));
        keys
    }

    /// Keys of digest files, oldest first.
    pub async fn digest_keys(&self) -> Vec<String> {
        let mut keys = self.keys().await;
        keys.retain(|k| k.contains("/CloudTrail-Digest/") && k.ends_with(".json.gz"));
        keys
    }

    /// Keys of Insights files (`.../CloudTrail-Insight/...`).
    pub async fn insight_keys(&self) -> Vec<String> {
        let mut keys = self.keys().await;
        keys.retain(|k| k.contains("/CloudTrail-Insight/") && k.ends_with(".json.gz"));
        keys
    }

    /// Every record in every Insights file, with the key of the file it is in.
    pub async fn insight_records(&self) -> Vec<(String, Value)> {
        self.records_of(self.insight_keys().await).await
    }

    /// Every record in every log file, with the key of the file it is in.
    pub async fn records(&self) -> Vec<(String, Value)> {
        self.records_of(self.log_keys().await).await
    }

    async fn records_of(&self, keys: Vec<String>) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for key in keys {
            let Some((body, _)) = self.get(&key).await else {
                continue;
            };
            let doc: Value = serde_json::from_slice(&gunzip(&body))
                .unwrap_or_else(|e| panic!("log file {key} is not JSON: {e}"));
            for r in doc["Records"].as_array().expect("Records array") {
                out.push((key.clone(), r.clone()));
            }
        }
        out
    }

    /// How many times each `eventID` occurs in the trail's log files.
    pub async fn event_id_counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (_, r) in self.records().await {
            *counts
                .entry(r["eventID"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
        }
        counts
    }

    /// Parsed digests, oldest first.
    pub async fn digests(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for key in self.digest_keys().await {
            if let Some((body, _)) = self.get(&key).await {
                out.push((
                    key,
                    serde_json::from_slice(&gunzip(&body)).expect("digest JSON"),
                ));
            }
        }
        out
    }

    /// Waits until every id in `ids` is in a log file that a digest lists.
    pub async fn wait_delivered(&self, ids: &[String]) {
        wait_for("records delivered and digested", || async {
            let counts = self.event_id_counts().await;
            if !ids.iter().all(|id| counts.contains_key(id)) {
                return None;
            }
            let listed: std::collections::HashSet<String> = self
                .digests()
                .await
                .iter()
                .flat_map(|(_, d)| {
                    d["logFiles"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|l| l["s3Object"].as_str().unwrap_or_default().to_string())
                })
                .collect();
            let logs = self.log_keys().await;
            logs.iter().all(|k| listed.contains(k)).then_some(())
        })
        .await
    }
}

fn walk(root: &Path, dir: &Path, keys: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, keys);
        } else if let Ok(rel) = p.strip_prefix(root) {
            keys.push(rel.to_string_lossy().into_owned());
        }
    }
}

/// Inflates one gzip member.
pub fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

/// Gzip (one member).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// Copies a directory tree (a local trail) for a destructive check.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let p = e.path();
        let target = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).expect("copy");
        }
    }
}
