//! Reading a stream in order from a given sequence: the one way cluster code reads
//! `GT_RECORDS` and `GT_SEEN`.
//!
//! An ordered consumer keeps no state on the servers (nothing to acknowledge, nothing another
//! collector could take over or steal messages from) and is re-created by the client on any
//! gap, so each reader sees every message of its filter from its start sequence, in order.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use futures_util::StreamExt;

/// One message as read.
#[derive(Debug, Clone)]
pub struct Read {
    pub seq: u64,
    pub subject: String,
    /// When the stream stored it (Unix seconds).
    pub stored_at: i64,
    pub payload: Bytes,
    /// Messages of the filter after this one, at the time it was delivered.
    pub pending: u64,
}

/// An in-order reader of one subject filter.
pub struct Reader {
    messages: pull::Ordered,
}

impl Reader {
    /// Reads `filter` from stream sequence `from` on (`0`: from the stream's start).
    pub async fn open(stream: &Stream, filter: &str, from: u64) -> Result<Reader, String> {
        let deliver_policy = if from <= 1 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: from,
            }
        };
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter.to_string(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("reading {filter} from {from}: {e}"))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| format!("reading {filter} from {from}: {e}"))?;
        Ok(Reader { messages })
    }

    /// The next message, or `None` if none came within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Read>, String> {
        let message = match tokio::time::timeout(wait, self.messages.next()).await {
            Err(_) => return Ok(None),
            Ok(None) => return Err("the reader ended".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(m))) => m,
        };
        let info = message.info().map_err(|e| e.to_string())?;
        Ok(Some(Read {
            seq: info.stream_sequence,
            subject: message.subject.to_string(),
            stored_at: info.published.timestamp(),
            pending: info.pending,
            payload: message.payload.clone(),
        }))
    }
}

/// Every message of `filter` from sequence `from` through `last` (a message of the filter that
/// exists). `Err` naming the gap when the stream has nothing more of the filter before it.
pub async fn read_through(
    stream: &Stream,
    filter: &str,
    from: u64,
    last: u64,
) -> Result<Vec<Read>, String> {
    let mut reader = Reader::open(stream, filter, from).await?;
    let mut out = Vec::new();
    loop {
        let Some(m) = reader.next(Duration::from_secs(30)).await? else {
            let at = out.last().map_or(from, |m: &Read| m.seq);
            return Err(format!(
                "{filter}: nothing after sequence {at} within 30s, expected messages up to {last}"
            ));
        };
        if m.seq > last {
            return Ok(out);
        }
        let done = m.seq == last;
        out.push(m);
        if done {
            return Ok(out);
        }
    }
}

/// The last stream sequence of `subject`, if it has a message.
pub async fn last_seq(stream: &Stream, subject: &str) -> Result<Option<u64>, String> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Some(m.sequence)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(format!("last message of {subject}: {e}")),
    }
}
