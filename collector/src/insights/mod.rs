//! CloudTrail Insights in the collector (see [`groundtrail_detection::insights`] for the model).

pub mod config;
