//! CloudWatch Logs JSON filter patterns (`{ $.eventName = "ConsoleLogin" && ... }`).
//!
//! Why: the CIS AWS Foundations Benchmark alarms, and Security Hub's CloudWatch.1-14 controls
//! that check them, are written in this language; an auditor's first question is whether those
//! exact patterns run. So the patterns AWS publishes are shipped verbatim (see [`pack`]) and
//! must parse and behave as AWS documents.
//!
//! What is exact: the JSON form of the grammar as the CloudWatch Logs user guide documents it
//! (selectors with `.name` and `[index]`, `=`/`!=` on strings with leading/trailing `*`,
//! `= != < <= > >=` on numbers, `IS NULL`, `IS TRUE`, `IS FALSE`, `NOT EXISTS`, `&&`, `||`,
//! parentheses with `() > && > ||`), plus unquoted dotted values, which the CIS patterns
//! and the guide's `123.123.*` example use although the guide's prose asks for quotes. Where the
//! guide is silent the choice is stated in [`eval`]'s module docs and tested. Regex values
//! (`%...%`) follow the guide's regex syntax section. Not supported, with a parse error: the
//! unstructured-term and space-delimited (`[a, b]`) forms, which are not JSON patterns.
//!
//! Each parse error carries the 1-based column (in characters) where parsing stopped.

mod ast;
mod eval;
pub mod pack;
mod parser;

pub use ast::{Expr, Op, Regex, Selector, Step, StrMatch, Test, Value};

use std::fmt;
use std::str::FromStr;

/// A pattern that does not parse, with the place it stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter pattern: column {column}: {message}")]
pub struct ParseError {
    /// 1-based column, in characters, where the problem is.
    pub column: usize,
    /// What was expected or what is wrong.
    pub message: String,
}

/// A parsed JSON filter pattern, ready to evaluate against many records.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPattern {
    source: String,
    expr: Expr,
}

impl FilterPattern {
    /// Parses a `{ ... }` JSON filter pattern.
    pub fn parse(source: &str) -> Result<Self, ParseError> {
        Ok(Self {
            source: source.to_string(),
            expr: parser::parse(source)?,
        })
    }

    /// True if the record satisfies the pattern.
    pub fn matches(&self, record: &serde_json::Value) -> bool {
        eval::eval(&self.expr, record)
    }

    /// The pattern as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The parsed expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }
}

impl Selector {
    /// Parses a lone selector (`$.userIdentity.arn`, `$.resources[0].ARN`), as rules name the
    /// field they group or correlate by.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        parser::parse_selector(text)
    }

    /// The value the selector reaches in `record`, if any.
    pub fn resolve<'a>(&self, record: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        eval::resolve(self, record)
    }
}

impl FromStr for FilterPattern {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for FilterPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cis_tests;
