//! Where the trail is delivered.
//!
//! A [`Destination`] is a bucket-like store: put an object with user metadata, get it back,
//! list keys in binary order. The collector delivers through it and `validate-logs` reads
//! through it, so a local directory and an S3 bucket are checked by the same code.
//!
//! Writes are idempotent by design: the collector chooses and records every key before the
//! first upload attempt, so a retried `put` overwrites the same object.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::DestinationConfig;

pub mod local;
pub mod s3;

/// A boxed future, so `Arc<dyn Destination>` works.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// User metadata of an object, keyed without the `x-amz-meta-` prefix (`signature`,
/// `signature-algorithm`), as boto3 and the AWS CLI see it.
pub type Metadata = BTreeMap<String, String>;

/// An object read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub body: Bytes,
    pub metadata: Metadata,
}

/// Why a destination call failed. Every variant is retried by the delivery loop; the variants
/// exist so that logs and metrics say *what kind* of failure is holding delivery up.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    /// The store refused (403, 404 bucket, 4xx).
    #[error("{destination}: refused: {message}")]
    Refused {
        destination: String,
        message: String,
    },
    /// The store is unreachable or failing (connection error, timeout, 5xx).
    #[error("{destination}: unavailable: {message}")]
    Unavailable {
        destination: String,
        message: String,
    },
    /// A local I/O error.
    #[error("{destination}: {source}")]
    Io {
        destination: String,
        source: std::io::Error,
    },
}

/// A bucket-like store the trail is delivered to.
pub trait Destination: Send + Sync + 'static {
    /// Name in logs, metrics and the journal's delivery state.
    fn name(&self) -> &str;

    /// The bucket name written into digests (`digestS3Bucket`, `s3Bucket`).
    fn bucket(&self) -> &str;

    /// Stores `body` at `key` with `metadata`, replacing any object already there. Returns once
    /// the store has acknowledged the whole object.
    fn put<'a>(
        &'a self,
        key: &'a str,
        body: Bytes,
        metadata: &'a Metadata,
    ) -> BoxFuture<'a, Result<(), DestinationError>>;

    /// Reads an object; `Ok(None)` when there is no such key.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Object>, DestinationError>>;

    /// Every key that starts with `prefix` and sorts after `start_after`, in binary order.
    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<String>, DestinationError>>;
}

/// Opens the destination a config entry describes.
pub async fn open(config: &DestinationConfig) -> anyhow::Result<Arc<dyn Destination>> {
    match config {
        DestinationConfig::Local { path, bucket, .. } => Ok(Arc::new(
            local::LocalDestination::open(config.name(), path, bucket.clone())?,
        )),
        DestinationConfig::S3 { .. } => Ok(Arc::new(s3::S3Destination::open(config).await?)),
    }
}
