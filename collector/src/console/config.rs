//! `[console]`: the web console served under `/console` (see [`crate::console`]).

use serde::{Deserialize, Serialize};

use crate::config::Duration;

/// The console section of the collector's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the web console at `/console` on the API listeners (`[server] listen`, and
    /// `[api] listen` when set). On by default: it asks for an `[[api.access_keys]]` key with
    /// the `read` scope (or, with no keys, lets loopback in only where `[api]
    /// allow_unsigned_loopback_reads` is on), so it opens nothing the API does not.
    pub enabled: bool,
    /// A session ends this long after its sign-in, used or not.
    pub session_lifetime: Duration,
    /// A session ends when it has not been used for this long.
    pub idle_timeout: Duration,
    /// Sessions held at once; a sign-in beyond this ends the session used least recently.
    /// Sessions live in memory: a restart of the collector signs everyone out.
    pub max_sessions: usize,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            session_lifetime: Duration::from_secs(12 * 3600),
            idle_timeout: Duration::from_secs(3600),
            max_sessions: 1000,
        }
    }
}

impl ConsoleConfig {
    /// Checks the section; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.session_lifetime.is_zero() {
            return Err("[console] session_lifetime must be positive".into());
        }
        if self.idle_timeout.is_zero() {
            return Err("[console] idle_timeout must be positive".into());
        }
        if self.max_sessions == 0 {
            return Err("[console] max_sessions must be at least 1".into());
        }
        Ok(())
    }
}
