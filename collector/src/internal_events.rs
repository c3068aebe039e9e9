//! Typed internal events, after vector's `internal_events`: each thing worth knowing about
//! is a struct whose [`InternalEvent::emit`] both logs it (through `tracing`) and counts it
//! (in [`crate::metrics`]). Keeping the two in one place means a log line and its metric can
//! never drift apart, and call sites stay one line long.

use std::sync::atomic::AtomicU64;

use crate::metrics::{Metrics, metrics};

/// Something the collector reports.
pub trait InternalEvent {
    /// Logs the event and counts it.
    fn emit(self);
}

fn add(counter: &AtomicU64, n: u64) {
    Metrics::add(counter, n);
}

/// A batch passed every check and reached the journal.
#[derive(Debug)]
pub struct BatchCommitted<'a> {
    pub agent: &'a str,
    pub received: u64,
    pub committed: u64,
    pub duplicates: u64,
}

impl InternalEvent for BatchCommitted<'_> {
    fn emit(self) {
        tracing::debug!(
            agent = self.agent,
            received = self.received,
            committed = self.committed,
            duplicates = self.duplicates,
            "batch committed"
        );
        let m = metrics();
        add(&m.records_received, self.received);
        add(&m.records_committed, self.committed);
        add(&m.records_duplicate, self.duplicates);
    }
}

/// A batch was refused; nothing of it was written.
#[derive(Debug)]
pub struct BatchRefused<'a> {
    pub agent: &'a str,
    pub status: u16,
    pub code: &'a str,
    pub message: &'a str,
}

impl InternalEvent for BatchRefused<'_> {
    fn emit(self) {
        tracing::warn!(
            agent = self.agent,
            status = self.status,
            code = self.code,
            "batch refused: {}",
            self.message
        );
        metrics().refused(self.code);
    }
}

/// A log file was closed and recorded in the journal under its final key.
#[derive(Debug)]
pub struct LogFileClosed<'a> {
    pub key: &'a str,
    pub records: u64,
    pub bytes: usize,
}

impl InternalEvent for LogFileClosed<'_> {
    fn emit(self) {
        tracing::info!(
            key = self.key,
            records = self.records,
            bytes = self.bytes,
            "log file closed"
        );
        add(&metrics().files_closed, 1);
    }
}

/// A log file was stored at a destination.
#[derive(Debug)]
pub struct LogFileDelivered<'a> {
    pub destination: &'a str,
    pub key: &'a str,
}

impl InternalEvent for LogFileDelivered<'_> {
    fn emit(self) {
        tracing::info!(
            destination = self.destination,
            key = self.key,
            "log file delivered"
        );
        metrics().file_delivered(self.destination);
    }
}

/// An upload failed; delivery to that destination holds and retries.
#[derive(Debug)]
pub struct DeliveryFailed<'a> {
    pub destination: &'a str,
    pub key: &'a str,
    pub error: &'a str,
}

impl InternalEvent for DeliveryFailed<'_> {
    fn emit(self) {
        tracing::warn!(
            destination = self.destination,
            key = self.key,
            "delivery failed, holding and retrying: {}",
            self.error
        );
        metrics().delivery_error(self.destination);
    }
}

/// A digest was signed and recorded (not yet uploaded).
#[derive(Debug)]
pub struct DigestWritten<'a> {
    pub destination: &'a str,
    pub key: &'a str,
    pub log_files: usize,
}

impl InternalEvent for DigestWritten<'_> {
    fn emit(self) {
        tracing::info!(
            destination = self.destination,
            key = self.key,
            log_files = self.log_files,
            "digest signed"
        );
        add(&metrics().digests_written, 1);
    }
}

/// A digest was stored at a destination.
#[derive(Debug)]
pub struct DigestDelivered<'a> {
    pub destination: &'a str,
    pub key: &'a str,
}

impl InternalEvent for DigestDelivered<'_> {
    fn emit(self) {
        tracing::info!(
            destination = self.destination,
            key = self.key,
            "digest delivered"
        );
        metrics().digest_delivered(self.destination);
    }
}

/// An audit record about an agent (sequence gap, silence) went into the journal.
#[derive(Debug)]
pub struct AgentAudit<'a> {
    pub agent: &'a str,
    pub event_name: &'a str,
    pub detail: &'a str,
}

impl InternalEvent for AgentAudit<'_> {
    fn emit(self) {
        tracing::warn!(
            agent = self.agent,
            event = self.event_name,
            "{}",
            self.detail
        );
        add(&metrics().agent_audit_records, 1);
    }
}

/// The journal or the history fails every write until the process restarts
/// (see [`crate::store_health`]).
#[derive(Debug)]
pub struct StoreStuck<'a> {
    pub store: &'a str,
    pub error: &'a str,
}

impl InternalEvent for StoreStuck<'_> {
    fn emit(self) {
        tracing::error!(
            store = self.store,
            "the {} store fails every write ({}): stopping the systemd watchdog and restarting",
            self.store,
            self.error
        );
        add(&metrics().stores_stuck, 1);
    }
}
