//! An S3 bucket, on AWS or any S3-compatible store, through aws-sdk-s3.
//!
//! Credentials come from the standard AWS chain (environment, shared profile, SSO, process,
//! container and instance roles) via `aws-config`, so the collector needs no secrets of its own
//! in its config. Endpoint, path-style addressing, checksum behaviour and server-side
//! encryption come from the `[[destinations]]` entry.
//!
//! Failures are sorted into [`DestinationError::Refused`] (the store answered with a 4xx: a
//! wrong bucket, missing permission) and [`DestinationError::Unavailable`] (no answer, timeout,
//! 5xx). Both are retried by the delivery loop; the split only tells an operator whether to fix
//! a policy or wait for the store.

use std::collections::HashMap;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use bytes::Bytes;

use super::{BoxFuture, Destination, DestinationError, Metadata, Object};
use crate::config::{ChecksumMode, DestinationConfig};

/// A [`Destination`] backed by an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Destination {
    name: String,
    bucket: String,
    client: aws_sdk_s3::Client,
    sse: Option<ServerSideEncryption>,
    sse_kms_key_id: Option<String>,
}

impl S3Destination {
    /// Builds the client a `type = "s3"` entry describes. Nothing is sent to the store here: a
    /// store that is down at start-up only delays delivery, it does not stop the collector.
    pub async fn open(config: &DestinationConfig) -> anyhow::Result<S3Destination> {
        let DestinationConfig::S3 {
            bucket,
            region,
            endpoint,
            force_path_style,
            checksums,
            sse,
            sse_kms_key_id,
            ..
        } = config
        else {
            anyhow::bail!("{} is not an S3 destination", config.name());
        };
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .load()
            .await;
        let mut builder =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(*force_path_style);
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        if *checksums == ChecksumMode::WhenRequired {
            builder = builder
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        Ok(S3Destination {
            name: config.name(),
            bucket: bucket.clone(),
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            sse: sse.as_deref().map(ServerSideEncryption::from),
            sse_kms_key_id: sse_kms_key_id.clone(),
        })
    }

    /// Sorts an SDK error into refused (4xx answer) or unavailable (anything else).
    fn error<E>(&self, op: &str, key: &str, err: SdkError<E, HttpResponse>) -> DestinationError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = match &err {
            SdkError::ServiceError(s) => Some(s.raw().status().as_u16()),
            SdkError::ResponseError(r) => Some(r.raw().status().as_u16()),
            _ => None,
        };
        let code = err.code().unwrap_or("").to_string();
        let detail = err.message().unwrap_or("").to_string();
        let message = format!(
            "{op} s3://{}/{key}: {}{}{}",
            self.bucket,
            if code.is_empty() {
                aws_smithy_error_text(&err)
            } else {
                code
            },
            status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            },
        );
        match status {
            Some(s) if (400..500).contains(&s) => DestinationError::Refused {
                destination: self.name.clone(),
                message,
            },
            _ => DestinationError::Unavailable {
                destination: self.name.clone(),
                message,
            },
        }
    }
}

/// The full error chain as text, for errors without an S3 error code (connection failures).
fn aws_smithy_error_text<E: std::error::Error + 'static>(
    err: &SdkError<E, HttpResponse>,
) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Destination for S3Destination {
    fn name(&self) -> &str {
        &self.name
    }

    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        body: Bytes,
        metadata: &'a Metadata,
    ) -> BoxFuture<'a, Result<(), DestinationError>> {
        Box::pin(async move {
            let meta: HashMap<String, String> = metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type("application/json")
                .set_metadata(Some(meta))
                .body(ByteStream::from(body));
            if let Some(sse) = &self.sse {
                req = req.server_side_encryption(sse.clone());
            }
            if let Some(kms) = &self.sse_kms_key_id {
                req = req.ssekms_key_id(kms);
            }
            req.send()
                .await
                .map(|_| ())
                .map_err(|e| self.error("PutObject", key, e))
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Object>, DestinationError>> {
        Box::pin(async move {
            let out = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(out) => out,
                Err(SdkError::ServiceError(s)) if s.err().is_no_such_key() => return Ok(None),
                Err(e) => return Err(self.error("GetObject", key, e)),
            };
            let metadata: Metadata = out
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            let body = out
                .body
                .collect()
                .await
                .map_err(|e| DestinationError::Unavailable {
                    destination: self.name.clone(),
                    message: format!("GetObject s3://{}/{key}: reading body: {e}", self.bucket),
                })?;
            Ok(Some(Object {
                body: body.into_bytes(),
                metadata,
            }))
        })
    }

    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<String>, DestinationError>> {
        Box::pin(async move {
            let mut keys = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let mut req = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(prefix);
                if let Some(after) = start_after {
                    req = req.start_after(after);
                }
                if let Some(t) = &token {
                    req = req.continuation_token(t);
                }
                let out = req
                    .send()
                    .await
                    .map_err(|e| self.error("ListObjectsV2", prefix, e))?;
                keys.extend(
                    out.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_string)),
                );
                match out.next_continuation_token() {
                    Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => break,
                }
            }
            // S3 already answers in binary order; sorting again protects callers from stores
            // that do not.
            keys.sort_unstable();
            Ok(keys)
        })
    }
}

/// These run against a real S3-compatible server when `S3_ENDPOINT` names one (the project's
/// test command starts moto and sets it); without it they print a notice and pass.
#[cfg(test)]
mod tests {
    use super::*;

    async fn destination(bucket: &str) -> Option<S3Destination> {
        let Ok(endpoint) = std::env::var("S3_ENDPOINT") else {
            eprintln!("S3_ENDPOINT not set: skipping the S3 destination test");
            return None;
        };
        // moto accepts any credentials; the standard chain reads these.
        // SAFETY: set before any client is built; tests in this module only read them.
        if std::env::var("AWS_ACCESS_KEY_ID").is_err() {
            unsafe {
                std::env::set_var("AWS_ACCESS_KEY_ID", "test");
                std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
            }
        }
        let config = DestinationConfig::S3 {
            name: None,
            bucket: bucket.to_string(),
            region: "us-east-1".into(),
            endpoint: Some(endpoint),
            force_path_style: true,
            checksums: ChecksumMode::WhenSupported,
            sse: None,
            sse_kms_key_id: None,
        };
        let d = S3Destination::open(&config).await.unwrap();
        Some(d)
    }

    #[tokio::test]
    async fn put_get_list_against_a_real_store() {
        let bucket = format!("gt-dest-{}", std::process::id());
        let Some(d) = destination(&bucket).await else {
            return;
        };
        // A missing bucket is refused (4xx), not "unavailable".
        let err = d
            .put("k", Bytes::from_static(b"x"), &Metadata::new())
            .await
            .unwrap_err();
        assert!(matches!(err, DestinationError::Refused { .. }), "{err}");
        d.client
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();

        let mut meta = Metadata::new();
        meta.insert("signature".into(), "abcd".into());
        meta.insert("signature-algorithm".into(), "SHA256withRSA".into());
        let key = "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2026/01/01/d.json.gz";
        d.put(key, Bytes::from_static(b"gz"), &meta).await.unwrap();
        let got = d.get(key).await.unwrap().unwrap();
        assert_eq!(&got.body[..], b"gz");
        assert_eq!(got.metadata, meta);
        assert_eq!(d.get("AWSLogs/missing").await.unwrap(), None);

        // More keys than one ListObjectsV2 page, in binary order, with start_after.
        for n in 0..1010 {
            d.put(
                &format!("many/{n:04}"),
                Bytes::from_static(b"x"),
                &Metadata::new(),
            )
            .await
            .unwrap();
        }
        let keys = d.list("many/", None).await.unwrap();
        assert_eq!(keys.len(), 1010);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(d.list("many/", Some("many/1005")).await.unwrap().len(), 4);
    }
}
