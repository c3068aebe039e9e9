//! The black-box tests, one module per area, built as one test binary (see `Cargo.toml`):
//! each module starts the real binaries against real TLS, S3 (moto), NATS and sled, and checks
//! what a user would see. Run one area with `cargo test -p groundtrail-tests --test e2e <module>::`.

mod agent;
mod api;
mod cluster;
mod cluster_docs;
mod collector;
#[cfg(feature = "browser")]
mod console;
mod detection;
mod hardening_collector;
mod hardening_limits;
mod hardening_records;
mod hardening_shipper;
mod insights;
mod nats_kit;
mod packaging;
mod sidecar;
mod sources;
mod trail_settings;
mod trails;
mod validate_logs;
