//! Deserializers that check a value while its node is being read.
//!
//! Why: YAML and JSON parsers give an error the position of the node whose visitor returned
//! it. Checking after the node was read (serde's `try_from`) would place a bad pattern at the
//! enclosing rule, or the whole list; checking inside the visitor places it at the value.

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

struct StrVisitor<T> {
    expecting: &'static str,
    check: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for StrVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.check)(v).map_err(E::custom)
    }
}

/// A string, checked by `check`.
pub(crate) fn string<'de, D: Deserializer<'de>, T>(
    d: D,
    expecting: &'static str,
    check: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    d.deserialize_str(StrVisitor { expecting, check })
}

struct MapVisitor<R, T> {
    expecting: &'static str,
    check: fn(R) -> Result<T, String>,
    raw: PhantomData<R>,
}

impl<'de, R: Deserialize<'de>, T> Visitor<'de> for MapVisitor<R, T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let raw = R::deserialize(de::value::MapAccessDeserializer::new(map))?;
        (self.check)(raw).map_err(de::Error::custom)
    }
}

/// A map read as `R`, then checked by `check`.
pub(crate) fn map<'de, D: Deserializer<'de>, R: Deserialize<'de>, T>(
    d: D,
    expecting: &'static str,
    check: fn(R) -> Result<T, String>,
) -> Result<T, D::Error> {
    d.deserialize_map(MapVisitor {
        expecting,
        check,
        raw: PhantomData,
    })
}

struct CountVisitor {
    max: u64,
}

impl Visitor<'_> for CountVisitor {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a whole number from 1 to {}", self.max)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<usize, E> {
        if (1..=self.max).contains(&n) {
            Ok(n as usize)
        } else {
            Err(E::custom(format!("count {n}: must be 1 to {}", self.max)))
        }
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<usize, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::custom(format!("count {n}: must be 1 to {}", self.max))),
        }
    }
}

/// A whole number in `1..=max`.
pub(crate) fn count<'de, D: Deserializer<'de>>(d: D, max: u64) -> Result<usize, D::Error> {
    d.deserialize_u64(CountVisitor { max })
}
