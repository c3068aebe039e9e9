//! Detection rule languages over CloudTrail records.
//!
//! Why: Groundtrail records and proves, and this crate lets it also warn. It evaluates rules
//! written in the languages CloudTrail users already have (issue 17):
//! - [`filter_pattern`]: CloudWatch Logs JSON filter patterns, including the Security Hub
//!   CloudWatch.1-14 (CIS) patterns shipped verbatim;
//! - [`event_pattern`]: EventBridge event patterns, over records wrapped the way EventBridge
//!   delivers CloudTrail events;
//! - [`sigma`]: Sigma rules for the AWS CloudTrail logsource, with the SigmaHQ rules vendored.
//!
//! - [`insights`]: CloudTrail Insights records for unusual call and error rates (issue 18).
//! - [`rules`]: rule files and built-in packs (`cis`, `host`, `sigma`) loaded into a `RuleSet`,
//!   and the `Engine` that evaluates records in log order with threshold and sequence windows.
//!
//! The crate is pure apart from reading rule files: a rule is parsed once and evaluated against a
//! `serde_json::Value`; no network, no clock (windows run on the records' eventTime). Alert
//! storage and delivery belong to the collector.

pub mod event_pattern;
pub mod filter_pattern;
pub mod insights;
pub mod rules;
pub mod sigma;
