//! The digest document (spec §2.2).
//!
//! A digest is signed over the SHA-256 of its exact stored bytes, so it is serialized once, by
//! [`DigestDocument::to_bytes`], and those bytes are what get hashed, signed, gzipped and
//! uploaded. Member order and the `\/` escaping match what AWS writes.

use serde::{Deserialize, Serialize};

use super::signing::{SigningError, SigningKey, sha256_hex, signing_string};

/// Every digest is signed with this algorithm (Java's name for RSASSA-PKCS1-v1_5 + SHA-256).
pub const SIGNATURE_ALGORITHM: &str = "SHA256withRSA";
/// The hash algorithm named for log files and the previous digest.
pub const HASH_ALGORITHM: &str = "SHA-256";

/// One digest file's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestDocument {
    pub aws_account_id: String,
    pub digest_start_time: String,
    pub digest_end_time: String,
    #[serde(rename = "digestS3Bucket")]
    pub digest_s3_bucket: String,
    #[serde(rename = "digestS3Object")]
    pub digest_s3_object: String,
    pub digest_public_key_fingerprint: String,
    pub digest_signature_algorithm: String,
    pub newest_event_time: Option<String>,
    pub oldest_event_time: Option<String>,
    #[serde(rename = "previousDigestS3Bucket")]
    pub previous_digest_s3_bucket: Option<String>,
    #[serde(rename = "previousDigestS3Object")]
    pub previous_digest_s3_object: Option<String>,
    pub previous_digest_hash_value: Option<String>,
    pub previous_digest_hash_algorithm: Option<String>,
    pub previous_digest_signature: Option<String>,
    pub log_files: Vec<DigestLogFile>,
}

/// A digest serialized once and signed: the bytes to gzip and store, their SHA-256 (the next
/// digest's `previousDigestHashValue`) and the hex signature (its `x-amz-meta-signature`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestSignature {
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub signature: String,
}

/// One `logFiles[]` entry: a delivered log file and the SHA-256 of its uncompressed bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestLogFile {
    #[serde(rename = "s3Bucket")]
    pub s3_bucket: String,
    #[serde(rename = "s3Object")]
    pub s3_object: String,
    pub hash_value: String,
    pub hash_algorithm: String,
    pub newest_event_time: String,
    pub oldest_event_time: String,
}

impl DigestDocument {
    /// The bytes to store: compact JSON with every `/` escaped as `\/`, as AWS's Java
    /// serializer writes it. `/` never occurs outside strings in JSON, so escaping it
    /// everywhere only touches string contents, and any JSON parser reads the same values.
    pub fn to_bytes(&self) -> Vec<u8> {
        let plain = serde_json::to_vec(self).expect("a DigestDocument always serializes");
        let mut out = Vec::with_capacity(plain.len() + plain.len() / 8);
        for b in plain {
            if b == b'/' {
                out.extend_from_slice(b"\\/");
            } else {
                out.push(b);
            }
        }
        out
    }

    /// Serializes the document once, hashes exactly those bytes and signs AWS's signing string
    /// (its own end time, bucket/key and previous signature). The one place a digest is
    /// signed, so the collector and every test trail agree on the signing string.
    pub fn sign(&self, key: &SigningKey) -> Result<DigestSignature, SigningError> {
        let bytes = self.to_bytes();
        let sha256 = sha256_hex(&bytes);
        let message = signing_string(
            &self.digest_end_time,
            &self.digest_s3_bucket,
            &self.digest_s3_object,
            &sha256,
            self.previous_digest_signature.as_deref(),
        );
        let signature = key.sign_hex(message.as_bytes())?;
        Ok(DigestSignature {
            bytes,
            sha256,
            signature,
        })
    }

    /// Sets `newestEventTime`/`oldestEventTime` from the listed log files (`null` when empty).
    /// JSON times compare correctly as strings because they are fixed-width UTC.
    pub fn set_event_time_bounds(&mut self) {
        self.newest_event_time = self
            .log_files
            .iter()
            .map(|f| f.newest_event_time.clone())
            .max();
        self.oldest_event_time = self
            .log_files
            .iter()
            .map(|f| f.oldest_event_time.clone())
            .min();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> DigestDocument {
        DigestDocument {
            aws_account_id: "111122223333".into(),
            digest_start_time: "2015-08-17T14:01:31Z".into(),
            digest_end_time: "2015-08-17T15:01:31Z".into(),
            digest_s3_bucket: "b".into(),
            digest_s3_object: "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/x.json.gz".into(),
            digest_public_key_fingerprint: "8eba5db5bea9b640d1c96a77256fe7f2".into(),
            digest_signature_algorithm: SIGNATURE_ALGORITHM.into(),
            newest_event_time: None,
            oldest_event_time: None,
            previous_digest_s3_bucket: None,
            previous_digest_s3_object: None,
            previous_digest_hash_value: None,
            previous_digest_hash_algorithm: None,
            previous_digest_signature: None,
            log_files: vec![],
        }
    }

    #[test]
    fn member_order_nulls_and_escaping_match_aws() {
        let bytes = doc().to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"awsAccountId":"111122223333","digestStartTime":"2015-08-17T14:01:31Z","digestEndTime":"2015-08-17T15:01:31Z","digestS3Bucket":"b","digestS3Object":"AWSLogs\/111122223333\/CloudTrail-Digest\/us-east-1\/x.json.gz","digestPublicKeyFingerprint""#));
        assert!(text.ends_with(r#""newestEventTime":null,"oldestEventTime":null,"previousDigestS3Bucket":null,"previousDigestS3Object":null,"previousDigestHashValue":null,"previousDigestHashAlgorithm":null,"previousDigestSignature":null,"logFiles":[]}"#));
        let back: DigestDocument = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, doc());
    }

    #[test]
    fn sign_covers_the_stored_bytes_and_the_chain() {
        use crate::trail::verify_signature;
        let key = SigningKey::generate().unwrap();
        let mut d = doc();
        d.previous_digest_signature = Some("ab".repeat(256));
        let signed = d.sign(&key).unwrap();
        assert_eq!(signed.bytes, d.to_bytes());
        assert_eq!(signed.sha256, sha256_hex(&signed.bytes));
        let message = signing_string(
            &d.digest_end_time,
            &d.digest_s3_bucket,
            &d.digest_s3_object,
            &signed.sha256,
            d.previous_digest_signature.as_deref(),
        );
        assert!(verify_signature(
            key.public_key_der(),
            message.as_bytes(),
            &signed.signature
        ));
    }

    #[test]
    fn event_time_bounds() {
        let mut d = doc();
        for (n, o) in [
            ("2015-08-17T14:30:00Z", "2015-08-17T14:00:00Z"),
            ("2015-08-17T14:50:00Z", "2015-08-17T13:59:00Z"),
        ] {
            d.log_files.push(DigestLogFile {
                s3_bucket: "b".into(),
                s3_object: "k".into(),
                hash_value: "00".into(),
                hash_algorithm: HASH_ALGORITHM.into(),
                newest_event_time: n.into(),
                oldest_event_time: o.into(),
            });
        }
        d.set_event_time_bounds();
        assert_eq!(d.newest_event_time.as_deref(), Some("2015-08-17T14:50:00Z"));
        assert_eq!(d.oldest_event_time.as_deref(), Some("2015-08-17T13:59:00Z"));
    }
}
