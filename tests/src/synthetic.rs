//! Trails written by the test itself, to check the validators against each other: chains with
//! gaps, damage or backfills no collector would write.

use serde_json::Value;

use crate::records::records;
use crate::store::{Metadata, Store, gzip};
use crate::{ACCOUNT, REGION, SigningKey, TRAIL};

/// A trail written directly with `groundtrail-common`'s key layout, digest document and
/// signing, into a [`Store`]: lets a test build chains (gaps, damage) no collector would.
pub struct SyntheticTrail {
    pub store: Store,
    pub bucket: String,
    pub key: SigningKey,
    pub layout: groundtrail_common::trail::TrailLayout,
    /// The previous digest: (key, signature, sha256 of its bytes).
    prev: Option<(String, String, String)>,
    pub digests: Vec<String>,
    pub logs: Vec<String>,
}

impl SyntheticTrail {
    pub fn new(store: Store, bucket: &str, prefix: &str) -> SyntheticTrail {
        SyntheticTrail {
            store,
            bucket: bucket.to_string(),
            key: SigningKey::generate().expect("RSA key"),
            layout: groundtrail_common::trail::TrailLayout::new(prefix, None),
            prev: None,
            digests: vec![],
            logs: vec![],
        }
    }

    /// Writes a log file delivered at `at` with `n` records.
    pub async fn log(
        &mut self,
        at: chrono::DateTime<chrono::Utc>,
        n: usize,
    ) -> groundtrail_common::trail::DigestLogFile {
        use groundtrail_common::time::json_time;
        let mut recs = records(n);
        for r in &mut recs {
            r["eventTime"] = Value::String(json_time(at));
        }
        let body = serde_json::to_vec(&serde_json::json!({ "Records": recs })).expect("JSON");
        let key =
            self.layout
                .log_file_key(ACCOUNT, REGION, at, &groundtrail_common::trail::unique16());
        self.store.put(&key, gzip(&body), &Metadata::new()).await;
        self.logs.push(key.clone());
        groundtrail_common::trail::DigestLogFile {
            s3_bucket: self.bucket.clone(),
            s3_object: key,
            hash_value: groundtrail_common::trail::sha256_hex(&body),
            hash_algorithm: "SHA-256".into(),
            newest_event_time: json_time(at),
            oldest_event_time: json_time(at),
        }
    }

    /// Writes and signs the digest for `[start, end]` (JSON times); `restart` begins a new
    /// chain (all `previousDigest*` null).
    pub async fn digest(
        &mut self,
        start: &str,
        end: &str,
        logs: Vec<groundtrail_common::trail::DigestLogFile>,
        restart: bool,
    ) -> String {
        self.write_digest(start, end, logs, restart, None).await
    }

    /// Writes a starting backfill digest (`..._backfill.json.gz`, its own chain) whose
    /// `backfill-generation-timestamp` metadata is `generated` (left out when `None`).
    pub async fn backfill_digest(
        &mut self,
        start: &str,
        end: &str,
        logs: Vec<groundtrail_common::trail::DigestLogFile>,
        generated: Option<&str>,
    ) -> String {
        let saved = self.prev.take();
        let key = self
            .write_digest(start, end, logs, true, Some(generated.map(str::to_string)))
            .await;
        self.prev = saved;
        key
    }

    async fn write_digest(
        &mut self,
        start: &str,
        end: &str,
        logs: Vec<groundtrail_common::trail::DigestLogFile>,
        restart: bool,
        backfill: Option<Option<String>>,
    ) -> String {
        use groundtrail_common::trail::DigestDocument;
        let end_t = groundtrail_common::time::parse_json_time(end).expect("JSON time");
        let key = self
            .layout
            .digest_key(ACCOUNT, REGION, TRAIL, REGION, end_t, backfill.is_some());
        let prev = if restart { None } else { self.prev.clone() };
        let mut doc = DigestDocument {
            aws_account_id: ACCOUNT.into(),
            digest_start_time: start.into(),
            digest_end_time: end.into(),
            digest_s3_bucket: self.bucket.clone(),
            digest_s3_object: key.clone(),
            digest_public_key_fingerprint: self.key.fingerprint().into(),
            digest_signature_algorithm: "SHA256withRSA".into(),
            newest_event_time: None,
            oldest_event_time: None,
            previous_digest_s3_bucket: prev.as_ref().map(|_| self.bucket.clone()),
            previous_digest_s3_object: prev.as_ref().map(|p| p.0.clone()),
            previous_digest_hash_value: prev.as_ref().map(|p| p.2.clone()),
            previous_digest_hash_algorithm: prev.as_ref().map(|_| "SHA-256".to_string()),
            previous_digest_signature: prev.as_ref().map(|p| p.1.clone()),
            log_files: logs,
        };
        doc.set_event_time_bounds();
        let signed = doc.sign(&self.key).expect("sign");
        let (bytes, hash, signature) = (signed.bytes, signed.sha256, signed.signature);
        let mut md = Metadata::new();
        md.insert("signature".into(), signature.clone());
        md.insert("signature-algorithm".into(), "SHA256withRSA".into());
        if let Some(Some(generated)) = &backfill {
            md.insert("backfill-generation-timestamp".into(), generated.clone());
        }
        self.store.put(&key, gzip(&bytes), &md).await;
        self.prev = Some((key.clone(), signature, hash));
        self.digests.push(key.clone());
        key
    }
}
