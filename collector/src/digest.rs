//! The signed digest chain: one chain per (destination, account, region).
//!
//! # Guarantees
//!
//! - **Every interval, a digest.** For each chain, a digest is written `digest_interval` after
//!   the previous one ends (the first one `digest_interval` after the chain's first delivered
//!   file), also when nothing was delivered in between, as CloudTrail does. With `[trail]
//!   account_id` set, the chain of that account and the home region starts at start-up, so an
//!   idle trail has digests too.
//! - **Every delivered file is listed exactly once.** A digest lists the files delivered to its
//!   destination since the previous digest; recording it removes them from the waiting set in
//!   the same atomic journal batch that moves the chain head ([`Journal::record_digest`]).
//! - **The chain links exact bytes.** `previousDigestHashValue` is the SHA-256 of the previous
//!   digest's uncompressed bytes as stored, `previousDigestSignature` its signature, and
//!   `digestStartTime` its `digestEndTime`. The first digest of a chain has all of these `null`.
//!   The head is in the journal, so the chain continues across restarts.
//! - **Signed as AWS signs.** SHA256withRSA over `common::trail::signing_string`, hex signature
//!   stored as object metadata `signature`, with `signature-algorithm` = `SHA256withRSA`.
//! - **Key before upload.** A digest's key, bytes and signature are recorded and flushed before
//!   its first upload, so a retried or post-crash upload stores the identical object.
//! - **Distinct keys.** A digest's end time is at least one second after its predecessor's, so
//!   two digests of a chain never share a (second-precision) key.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use groundtrail_common::shutdown::Shutdown;
use groundtrail_common::time::{json_time, now_secs, parse_json_time};
use groundtrail_common::trail::digest::{HASH_ALGORITHM, SIGNATURE_ALGORITHM};
use groundtrail_common::trail::{DigestDocument, SigningError, SigningKey, TrailLayout};
use tokio::sync::Notify;

use crate::internal_events::{DigestWritten, InternalEvent};
use crate::journal::{Chain, ChainHead, Journal, JournalError, PendingDigest};

/// Why a digest could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("signing a digest: {0}")]
    Signing(#[from] SigningError),
}

/// One destination's identity as digests see it.
#[derive(Debug, Clone)]
pub struct DigestTarget {
    /// Destination name (journal key).
    pub name: String,
    /// Its bucket (`digestS3Bucket`).
    pub bucket: String,
    /// Woken when a digest is ready to upload.
    pub wake: Arc<Notify>,
}

/// How the digests of one trail are named, signed and timed: everything about a digest
/// except where its chain is kept. The [`DigestWriter`] keeps chains in the journal; a cluster
/// shard writer keeps them in its shard's state (see `crate::cluster`).
#[derive(Clone)]
pub struct ChainSigner {
    pub key: Arc<SigningKey>,
    pub layout: TrailLayout,
    pub trail_name: String,
    pub home_region: String,
    pub interval: Duration,
}

/// Writes the digests of every chain.
pub struct DigestWriter {
    journal: Arc<Journal>,
    signer: ChainSigner,
    targets: Vec<DigestTarget>,
    /// A chain that exists from the start, before any file: the trail's own account and home
    /// region, so an idle trail still gets its digests (as CloudTrail's does), counted from
    /// `started`.
    seed: Option<((String, String), DateTime<Utc>)>,
}

impl std::fmt::Debug for DigestWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestWriter")
            .field("trail_name", &self.signer.trail_name)
            .finish_non_exhaustive()
    }
}

/// The digest document of one chain at `end`, its exact bytes, and their signature.
#[derive(Debug, Clone)]
pub struct SignedDigest {
    pub document: DigestDocument,
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub signature: String,
}

impl ChainSigner {
    pub fn interval(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.interval).unwrap_or(chrono::Duration::hours(1))
    }

    /// When a chain's next digest is due: an interval after its head ends, or after its first
    /// waiting file was delivered. `None` for a chain with neither (nothing to do).
    pub fn due_at(&self, chain: &Chain) -> Option<DateTime<Utc>> {
        let base = match &chain.head {
            Some(h) => parse_json_time(&h.end_time)?,
            None => chain
                .waiting
                .values()
                .filter_map(|f| parse_json_time(&f.delivered_at))
                .min()?,
        };
        Some(base + self.interval())
    }

    /// Builds and signs the next digest of a chain ending at (about) `now`.
    pub fn sign(
        &self,
        bucket: &str,
        account: &str,
        region: &str,
        chain: &Chain,
        now: DateTime<Utc>,
    ) -> Result<SignedDigest, DigestError> {
        let head_end = chain
            .head
            .as_ref()
            .and_then(|h| parse_json_time(&h.end_time));
        let end = match head_end {
            Some(h) if now <= h => h + chrono::Duration::seconds(1),
            _ => now,
        };
        let start = match head_end {
            Some(h) => h,
            None => {
                let first = chain
                    .waiting
                    .values()
                    .filter_map(|f| parse_json_time(&f.delivered_at))
                    .min()
                    .unwrap_or(end);
                first.min(end - self.interval())
            }
        };
        let key = self.layout.digest_key(
            account,
            region,
            &self.trail_name,
            &self.home_region,
            end,
            false,
        );
        let head = chain.head.as_ref();
        let mut document = DigestDocument {
            aws_account_id: account.to_string(),
            digest_start_time: json_time(start),
            digest_end_time: json_time(end),
            digest_s3_bucket: bucket.to_string(),
            digest_s3_object: key.clone(),
            digest_public_key_fingerprint: self.key.fingerprint().to_string(),
            digest_signature_algorithm: SIGNATURE_ALGORITHM.to_string(),
            newest_event_time: None,
            oldest_event_time: None,
            previous_digest_s3_bucket: head.map(|h| h.bucket.clone()),
            previous_digest_s3_object: head.map(|h| h.key.clone()),
            previous_digest_hash_value: head.map(|h| h.sha256.clone()),
            previous_digest_hash_algorithm: head.map(|_| HASH_ALGORITHM.to_string()),
            previous_digest_signature: head.map(|h| h.signature.clone()),
            log_files: chain.waiting.values().map(|f| f.entry.clone()).collect(),
        };
        document.set_event_time_bounds();
        let groundtrail_common::trail::DigestSignature {
            bytes,
            sha256,
            signature,
        } = document.sign(&self.key)?;
        Ok(SignedDigest {
            document,
            bytes,
            sha256,
            signature,
        })
    }
}

impl SignedDigest {
    /// The chain's new head (what the next digest links to) and the digest as recorded for
    /// upload: exactly these bytes go out, however often the upload is retried.
    pub fn into_head(self) -> (ChainHead, PendingDigest) {
        let head = ChainHead {
            end_time: self.document.digest_end_time,
            bucket: self.document.digest_s3_bucket,
            key: self.document.digest_s3_object,
            sha256: self.sha256,
            signature: self.signature.clone(),
        };
        let pending = PendingDigest {
            key: head.key.clone(),
            // `to_bytes` is serde_json output: valid UTF-8.
            document: String::from_utf8_lossy(&self.bytes).into_owned(),
            signature: self.signature,
        };
        (head, pending)
    }
}

impl DigestWriter {
    pub fn new(
        journal: Arc<Journal>,
        key: Arc<SigningKey>,
        layout: TrailLayout,
        trail_name: String,
        home_region: String,
        interval: Duration,
        targets: Vec<DigestTarget>,
    ) -> DigestWriter {
        DigestWriter {
            journal,
            signer: ChainSigner {
                key,
                layout,
                trail_name,
                home_region,
                interval,
            },
            targets,
            seed: None,
        }
    }

    /// Makes (`account`, `region`) a chain of every destination from `started` on, even before
    /// any file is delivered for it.
    pub fn with_seed(
        mut self,
        account: &str,
        region: &str,
        started: DateTime<Utc>,
    ) -> DigestWriter {
        self.seed = Some(((account.to_string(), region.to_string()), started));
        self
    }

    /// Writes every digest that is due at `now` — or, with `force`, one for every chain with
    /// delivered files not yet in a digest (shutdown) — records them, flushes, and wakes the
    /// deliverers. Returns how many were written.
    pub async fn write_due(&self, now: DateTime<Utc>, force: bool) -> Result<usize, DigestError> {
        let mut written = 0;
        for target in &self.targets {
            let mut wrote_here = false;
            let mut chains = self.journal.chains(&target.name)?;
            if let Some((pair, _)) = &self.seed {
                chains.entry(pair.clone()).or_default();
            }
            for ((account, region), chain) in chains {
                let seeded = self.seed.as_ref().and_then(|((a, r), started)| {
                    (a == &account && r == &region).then(|| *started + self.signer.interval())
                });
                let due = self
                    .signer
                    .due_at(&chain)
                    .or(seeded)
                    .is_some_and(|at| at <= now)
                    || (force && !chain.waiting.is_empty());
                if !due {
                    continue;
                }
                let signed = self
                    .signer
                    .sign(&target.bucket, &account, &region, &chain, now)?;
                let (head, pending) = signed.into_head();
                let listed: Vec<u64> = chain.waiting.keys().copied().collect();
                self.journal.record_digest(
                    &target.name,
                    &account,
                    &region,
                    &listed,
                    &head,
                    &pending,
                )?;
                DigestWritten {
                    destination: &target.name,
                    key: &head.key,
                    log_files: listed.len(),
                }
                .emit();
                written += 1;
                wrote_here = true;
            }
            if wrote_here {
                // Key and signature must be durable before the first upload.
                self.journal.flush().await?;
                target.wake.notify_one();
            }
        }
        Ok(written)
    }

    /// Writes due digests until shutdown, checking every second (or every interval, if shorter).
    pub async fn run(&self, mut shutdown: Shutdown) {
        let tick = self.signer.interval.min(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            if let Err(e) = self.write_due(now_secs(), false).await {
                tracing::error!("digest: {e}; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::FileEntry;
    use chrono::TimeZone;
    use groundtrail_common::trail::{sha256_hex, signing_string, verify_signature};

    fn setup(dir: &std::path::Path) -> (Arc<Journal>, DigestWriter, DigestTarget) {
        let journal = Arc::new(Journal::open(&dir.join("j")).unwrap());
        let target = DigestTarget {
            name: "local".into(),
            bucket: "bkt".into(),
            wake: Arc::new(Notify::new()),
        };
        let w = DigestWriter::new(
            journal.clone(),
            Arc::new(SigningKey::generate().unwrap()),
            TrailLayout::default(),
            "trail".into(),
            "us-east-1".into(),
            Duration::from_secs(3600),
            vec![target.clone()],
        );
        (journal, w, target)
    }

    fn deliver(journal: &Journal, n: u32, at: DateTime<Utc>) {
        let entry = FileEntry {
            key: format!("AWSLogs/111122223333/CloudTrail/us-east-1/2026/01/01/f{n}.json.gz"),
            account: "111122223333".into(),
            region: "us-east-1".into(),
            sha256: format!("{n:064x}"),
            newest_event_time: "2026-01-01T00:00:09Z".into(),
            oldest_event_time: "2026-01-01T00:00:01Z".into(),
            records: 1,
        };
        let id = journal
            .close_file(&entry, b"gz", &[], &["local".into()])
            .unwrap();
        journal.mark_delivered(id, "local", "bkt", at, &[]).unwrap();
    }

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }

    #[tokio::test]
    async fn chain_is_signed_linked_and_continues_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, w, _target) = setup(dir.path());
        deliver(&journal, 1, t(10));
        deliver(&journal, 2, t(20));
        assert_eq!(w.write_due(t(100), false).await.unwrap(), 0, "not due yet");
        assert_eq!(w.write_due(t(3610), false).await.unwrap(), 1);
        // Nothing delivered in the next hour: still a digest.
        assert_eq!(w.write_due(t(7210), false).await.unwrap(), 1);
        let q = journal.pending_digests("local").unwrap();
        assert_eq!(q.len(), 2);
        let first: DigestDocument = serde_json::from_str(&q[0].1.document).unwrap();
        let second: DigestDocument = serde_json::from_str(&q[1].1.document).unwrap();
        assert_eq!(first.log_files.len(), 2);
        assert_eq!(first.previous_digest_signature, None);
        assert_eq!(first.previous_digest_s3_object, None);
        assert_eq!(
            first.newest_event_time.as_deref(),
            Some("2026-01-01T00:00:09Z")
        );
        assert!(first.digest_start_time.as_str() <= "2026-01-01T00:00:10Z");
        assert_eq!(first.digest_end_time, "2026-01-01T01:00:10Z");
        assert!(
            q[0].1
                .key
                .ends_with("_CloudTrail-Digest_us-east-1_trail_us-east-1_20260101T010010Z.json.gz")
        );
        // Both signatures verify over the signing string of the exact stored bytes.
        let public = w.signer.key.public_key_der().to_vec();
        for (doc, (_, p)) in [(&first, &q[0]), (&second, &q[1])] {
            let msg = signing_string(
                &doc.digest_end_time,
                "bkt",
                &p.key,
                &sha256_hex(p.document.as_bytes()),
                doc.previous_digest_signature.as_deref(),
            );
            assert!(verify_signature(&public, msg.as_bytes(), &p.signature));
        }
        // The second links to the first's exact bytes and signature.
        assert!(second.log_files.is_empty());
        assert_eq!(second.newest_event_time, None);
        assert_eq!(second.digest_start_time, first.digest_end_time);
        assert_eq!(
            second.previous_digest_s3_object.as_deref(),
            Some(q[0].1.key.as_str())
        );
        assert_eq!(
            second.previous_digest_hash_value,
            Some(sha256_hex(q[0].1.document.as_bytes()))
        );
        assert_eq!(
            second.previous_digest_signature.as_deref(),
            Some(q[0].1.signature.as_str())
        );
        assert_eq!(
            second.previous_digest_hash_algorithm.as_deref(),
            Some("SHA-256")
        );

        // Reopen: the chain continues from the persisted head.
        drop(w);
        drop(journal);
        let journal = Arc::new(Journal::open(&dir.path().join("j")).unwrap());
        let w2 = DigestWriter::new(
            journal.clone(),
            Arc::new(SigningKey::generate().unwrap()),
            TrailLayout::default(),
            "trail".into(),
            "us-east-1".into(),
            Duration::from_secs(3600),
            vec![DigestTarget {
                name: "local".into(),
                bucket: "bkt".into(),
                wake: Arc::new(Notify::new()),
            }],
        );
        deliver(&journal, 3, t(7300));
        // Forced (shutdown) digest of a chain with a waiting file, before it is due.
        assert_eq!(w2.write_due(t(7300), true).await.unwrap(), 1);
        let q = journal.pending_digests("local").unwrap();
        let third: DigestDocument = serde_json::from_str(&q[2].1.document).unwrap();
        assert_eq!(third.digest_start_time, second.digest_end_time);
        assert_eq!(
            third.previous_digest_signature.as_deref(),
            Some(q[1].1.signature.as_str())
        );
        assert_eq!(third.log_files.len(), 1);
    }

    #[tokio::test]
    async fn a_seeded_chain_gets_digests_before_any_file() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, w, _) = setup(dir.path());
        let w = w.with_seed("111122223333", "us-east-1", t(0));
        assert_eq!(w.write_due(t(3599), false).await.unwrap(), 0);
        assert_eq!(w.write_due(t(3600), false).await.unwrap(), 1);
        let q = journal.pending_digests("local").unwrap();
        let doc: DigestDocument = serde_json::from_str(&q[0].1.document).unwrap();
        assert!(doc.log_files.is_empty());
        assert_eq!(doc.digest_start_time, "2026-01-01T00:00:00Z");
        assert_eq!(doc.previous_digest_signature, None);
        // From then on the persisted head drives it.
        assert_eq!(w.write_due(t(5000), false).await.unwrap(), 0);
        assert_eq!(w.write_due(t(7200), false).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn back_to_back_digests_get_distinct_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, w, _) = setup(dir.path());
        deliver(&journal, 1, t(0));
        assert_eq!(w.write_due(t(5), true).await.unwrap(), 1);
        deliver(&journal, 2, t(5));
        assert_eq!(w.write_due(t(5), true).await.unwrap(), 1);
        let q = journal.pending_digests("local").unwrap();
        assert_ne!(q[0].1.key, q[1].1.key);
        // A forced pass with nothing waiting writes nothing.
        assert_eq!(w.write_due(t(6), true).await.unwrap(), 0);
    }
}
