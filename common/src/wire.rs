//! The agent -> collector batch protocol.
//!
//! ```text
//! POST /v1/events HTTP/1.1
//! Content-Type: application/x-ndjson
//! Content-Encoding: zstd                (optional)
//! X-Groundtrail-Agent: web-1            (informational; with mTLS the certificate names the agent)
//! X-Groundtrail-Seq-First: 1001         (optional: the agent's sequence numbers of the first
//! X-Groundtrail-Seq-Last: 1500           and last record, so the collector can see gaps)
//!
//! {"eventVersion":"1.11",...}\n
//! {"eventVersion":"1.11",...}\n
//! ```
//!
//! The collector answers `200` with a [`BatchResponse`] only once every record of the batch is
//! durable in its journal (the commit point); the agent may then delete up to `commitPoint`.
//! Anything else is an [`ErrorResponse`] and means nothing of the batch was written, so the
//! agent may send the same batch again: duplicates are dropped by `eventID`. Every error answer
//! of the collector carries `X-Groundtrail-Error: <code>` ([`HEADER_ERROR`]), so that the agent
//! can tell the collector's verdict from a proxy's or a wrong port's.

use serde::{Deserialize, Serialize};

/// The ingest path.
pub const EVENTS_PATH: &str = "/v1/events";
/// Newline-delimited JSON, one CloudTrail record per line.
pub const NDJSON: &str = "application/x-ndjson";
/// The agent's name, when no client certificate names it.
pub const HEADER_AGENT: &str = "x-groundtrail-agent";
/// The sequence number of the batch's first record.
pub const HEADER_SEQ_FIRST: &str = "x-groundtrail-seq-first";
/// The sequence number of the batch's last record.
pub const HEADER_SEQ_LAST: &str = "x-groundtrail-seq-last";
/// Set by the collector on every error answer it renders, to the answer's `__type` code. The
/// agent judges records only on an answer that carries it: a `400` or `413` from anything else
/// (a TLS port answering plain HTTP, a proxy, a wrong port) says nothing about the records and
/// must not make the agent set them aside.
pub const HEADER_ERROR: &str = "x-groundtrail-error";

/// Default limits, shared so the agent never builds a batch the collector would refuse.
pub mod limits {
    /// Largest request body on the wire (compressed or not).
    pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
    /// Largest body after zstd decompression: a bomb stops here.
    pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;
    /// Most records in one batch.
    pub const MAX_BATCH_RECORDS: usize = 10_000;
    /// Largest single record (CloudTrail's own event size limit is 256 KB).
    pub const MAX_RECORD_BYTES: usize = 256 * 1024;
}

/// The collector's `200` answer to a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    /// Records newly written to the journal.
    pub committed: u64,
    /// Records dropped because their `eventID` was already known.
    pub duplicates: u64,
    /// The agent sequence number up to which everything is durable (the batch's
    /// `X-Groundtrail-Seq-Last`), when the batch carried one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_point: Option<u64>,
}

/// Every non-200 answer: a CloudTrail-style error code, a message, and where known the 1-based
/// line of the batch that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    #[serde(rename = "__type")]
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl ErrorResponse {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorResponse {
        ErrorResponse {
            code: code.into(),
            message: message.into(),
            line: None,
        }
    }

    pub fn at_line(mut self, line: usize) -> ErrorResponse {
        self.line = Some(line);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes() {
        let ok = BatchResponse {
            committed: 3,
            duplicates: 1,
            commit_point: Some(9),
        };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"committed":3,"duplicates":1,"commitPoint":9}"#
        );
        let err = ErrorResponse::new("InvalidData", "line 2: bad").at_line(2);
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"__type":"InvalidData","message":"line 2: bad","line":2}"#
        );
    }
}
