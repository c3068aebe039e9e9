//! Bounded counts of attribute values (identity ARN, user agent, error code).
//!
//! Why bounded: one key can see thousands of distinct identities; AWS lists only the top five
//! per attribute, so we keep at most `max_values` values per tally and drop the rest (a later
//! value never displaces an earlier one, so the result does not depend on arrival order within
//! a minute more than the counts themselves do).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The attributes AWS attributes an insight to, in the order its example lists them.
pub(crate) const ATTRIBUTES: [&str; 3] = ["userIdentityArn", "userAgent", "errorCode"];

/// Per-attribute value counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tally {
    /// One map per entry of [`ATTRIBUTES`].
    pub values: [BTreeMap<String, u64>; 3],
}

impl Tally {
    /// Counts one call with these attribute values (`None`: the record has no such value).
    pub fn add(&mut self, values: &[Option<&str>; 3], max_values: usize) {
        for (map, v) in self.values.iter_mut().zip(values) {
            if let Some(v) = v {
                add_one(map, v, 1, max_values);
            }
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Tally, max_values: usize) {
        for (map, o) in self.values.iter_mut().zip(&other.values) {
            for (v, &n) in o {
                add_one(map, v, n, max_values);
            }
        }
    }

    /// The top five values of attribute `i` by count, as `(value, count / minutes)`, highest
    /// first; ties by value so the order is deterministic.
    pub fn top(&self, i: usize, minutes: i64) -> Vec<(String, f64)> {
        let mut v: Vec<(&String, u64)> = self.values[i].iter().map(|(k, &n)| (k, n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v.into_iter()
            .take(5)
            .map(|(k, n)| (k.clone(), n as f64 / minutes.max(1) as f64))
            .collect()
    }
}

fn add_one(map: &mut BTreeMap<String, u64>, v: &str, n: u64, max_values: usize) {
    if let Some(c) = map.get_mut(v) {
        *c += n;
    } else if map.len() < max_values {
        map.insert(v.to_string(), n);
    }
}
