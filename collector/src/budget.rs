//! The memory budget for request bodies in flight.
//!
//! Connection caps alone do not bound memory: 1,024 connections of up to 200 HTTP/2 streams
//! each, every one allowed an 8 MiB body, is far more than a host has. So every request body,
//! ingest or API, first reserves what it may take (its `Content-Length`, else the largest
//! body its endpoint reads) from one budget of `[limits] max_body_bytes_in_flight` bytes, and
//! gives it back when its answer is written. When the budget is spent the request is refused
//! at once (503 `ThrottlingException`, `Retry-After: 1`) rather than queued: the agent and the
//! AWS SDKs retry such answers with backoff, and a queue would only move the memory elsewhere.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in KiB so that budgets of many GiB fit a semaphore's `u32` requests.
const UNIT: usize = 1024;

/// Bytes of request bodies that may be in memory at once.
#[derive(Debug)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total: u32,
}

/// Part of the budget, given back on drop.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX)
}

impl BodyBudget {
    pub fn new(bytes: usize) -> BodyBudget {
        let total = units(bytes);
        BodyBudget {
            units: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Reserves `bytes` now, or `None` when the budget cannot cover them.
    pub fn reserve(&self, bytes: usize) -> Option<Reservation> {
        let want = units(bytes).min(self.total);
        self.units
            .clone()
            .try_acquire_many_owned(want)
            .ok()
            .map(|permit| Reservation { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let budget = BodyBudget::new(10 * 1024);
        let a = budget.reserve(6 * 1024).unwrap();
        assert!(budget.reserve(5 * 1024).is_none(), "over the budget");
        let b = budget.reserve(4 * 1024).unwrap();
        assert!(budget.reserve(1).is_none(), "spent");
        drop(a);
        assert!(budget.reserve(5 * 1024).is_some());
        drop(b);
        // A body larger than the whole budget takes all of it (config validation makes the
        // budget at least the largest body).
        assert!(budget.reserve(100 * 1024).is_some());
    }
}
