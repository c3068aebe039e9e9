//! The test kit shared by the black-box tests (`tests/tests`) and the benchmark
//! (`groundtrail-bench`): they start the real `groundtrail-collector` binary,
//! talk to it over real HTTP and TLS, read the trail back from a directory or from a real
//! S3-compatible server (moto), and run both `groundtrail-collector validate-logs` and the
//! unmodified `aws cloudtrail validate-logs`.
//!
//! Environment (set by `scripts/test.sh`):
//! - `S3_ENDPOINT`: a running S3-compatible server (moto) on loopback.
//! - `MOTO_SERVER`: the `moto_server` executable, for tests that start their own S3 server.
//! - `AWS_CLI`: the `aws` executable (awscli 1.x).
//! - `NATS_SERVER`: the `nats-server` executable, for tests that start their own NATS cluster
//!   ([`nats::NatsCluster`]).
//! - `GROUNDTRAIL_TESTS_REQUIRE_ALL=1`: a missing S3 server, AWS CLI or NATS server fails the
//!   test instead of skipping it.

//!
//! Modules, each a thing the tests handle:
//! - [`env`]: tools and servers from the environment, and where the binaries are ([`Bins`]);
//! - [`readiness`], [`process`]: a process under test, ready on its own `READY=1`, which also
//!   names the ports it bound (configs say port 0), killed when dropped;
//! - [`collector_config`], [`collector`], [`agent`], [`pki`]: the two binaries, their configs
//!   and certificates;
//! - [`records`], [`ingest`]: records and batches, and sending them;
//! - [`store`], [`validate`], [`cloudtrail_stub`], [`synthetic`]: reading a trail back and
//!   checking it with both validators;
//! - [`moto`], [`nats`], [`webhook`]: servers a test starts for itself.
//!
//! Everything is re-exported at the top, so `use groundtrail_tests::*` reaches it.

pub mod agent;
pub mod cloudtrail_stub;
pub mod collector;
pub mod collector_config;
pub mod env;
pub mod ingest;
pub mod moto;
pub mod nats;
pub mod pki;
pub mod process;
pub mod readiness;
pub mod records;
pub mod store;
pub mod synthetic;
pub mod validate;
pub mod webhook;

use std::time::Duration;

pub use agent::*;
pub use cloudtrail_stub::*;
pub use collector::*;
pub use collector_config::*;
pub use env::*;
pub use ingest::*;
pub use moto::*;
pub use pki::*;
pub use process::*;
pub use readiness::*;
pub use records::*;
pub use store::*;
pub use synthetic::*;
pub use validate::*;

pub use groundtrail_common::trail::SigningKey;

/// Account and regions the tests write.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
pub const TRAIL: &str = "groundtrail";
/// The trail ARN of the collector configs written here.
pub const TRAIL_ARN: &str = "arn:aws:cloudtrail:us-east-1:123456789012:trail/groundtrail";

/// Generous deadline for anything that waits on the collector (a 2-core CI machine that is also
/// compiling is slow; nothing here asserts on time, it only gives up eventually).
pub const DEADLINE: Duration = Duration::from_secs(90);
