//! What the tests find in their environment: the tools (moto, the AWS CLI) and servers
//! (`S3_ENDPOINT`) they need, skipped with a notice when missing unless
//! `GROUNDTRAIL_TESTS_REQUIRE_ALL=1`; and where the binaries under test are ([`Bins`]).

use std::path::{Path, PathBuf};

/// Whether every test must run (no skipping): true under `scripts/test.sh`.
pub fn require_all() -> bool {
    std::env::var("GROUNDTRAIL_TESTS_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// The workspace root (`tests/..`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The S3 endpoint of the shared moto server, or `None` (with a notice) when the test should
/// be skipped. Under `scripts/test.sh` a missing endpoint is a failure.
pub fn s3_endpoint(test: &str) -> Option<String> {
    match std::env::var("S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                !require_all(),
                "{test}: S3_ENDPOINT is not set but GROUNDTRAIL_TESTS_REQUIRE_ALL=1"
            );
            eprintln!("SKIPPED {test}: S3_ENDPOINT is not set (run scripts/test.sh)");
            None
        }
    }
}

pub(crate) fn tool(env: &str, venv_path: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| Some(workspace_root().join(venv_path)))
        .filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            !require_all(),
            "{test}: {env} not found but GROUNDTRAIL_TESTS_REQUIRE_ALL=1"
        );
        eprintln!("SKIPPED {test}: {env} is not set and {venv_path} does not exist");
    }
    found
}

/// The `aws` executable (awscli 1.x), or `None` (with a notice) to skip.
pub fn aws_cli(test: &str) -> Option<PathBuf> {
    tool("AWS_CLI", ".venv-awscli/bin/aws", test)
}

/// The `moto_server` executable, or `None` (with a notice) to skip.
pub fn moto_server(test: &str) -> Option<PathBuf> {
    tool("MOTO_SERVER", ".venv-s3/bin/moto_server", test)
}

/// A built binary of the workspace (`target/<profile>/<name>`), next to this test executable.
/// `GROUNDTRAIL_BIN_DIR` overrides the directory.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("GROUNDTRAIL_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Where the binaries under test are, and how much they log: the tests run the debug builds
/// next to their own executable ([`Bins::for_tests`]), the benchmark the release builds of its
/// `--bin-dir` ([`Bins::in_dir`]).
#[derive(Debug, Clone)]
pub struct Bins {
    pub collector: PathBuf,
    pub agent: PathBuf,
    /// `RUST_LOG` of every process started (the benchmark's default, `warn`, keeps logging out
    /// of its CPU figures).
    pub rust_log: String,
}

impl Bins {
    /// `groundtrail-collector` and `groundtrail-agent` in `dir`; an error names the one missing.
    pub fn in_dir(dir: &Path, rust_log: &str) -> anyhow::Result<Bins> {
        let bins = Bins {
            collector: dir.join("groundtrail-collector"),
            agent: dir.join("groundtrail-agent"),
            rust_log: rust_log.to_string(),
        };
        for p in [&bins.collector, &bins.agent] {
            anyhow::ensure!(
                p.is_file(),
                "{} is missing: build it (`cargo build -p groundtrail-collector -p groundtrail-agent`, with --release for the benchmark) or name its directory",
                p.display()
            );
        }
        Ok(bins)
    }

    /// The tests' binaries ([`bin`]), logging at `info`.
    pub fn for_tests() -> Bins {
        Bins {
            collector: bin("groundtrail-collector"),
            agent: bin("groundtrail-agent"),
            rust_log: "info".into(),
        }
    }
}
