//! `groundtrail-bench --quick` against the binaries of this build (target/<profile>/): every
//! scenario runs and the JSON file has every figure of `scenarios::EXPECTED`, measured. The
//! figures of a quick run (debug binaries, tiny sizes) mean nothing; this checks the benchmark
//! itself still works. Skipped with a notice when the collector or agent binary is missing
//! (run `cargo build --workspace --bins` first, as CI does).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use groundtrail_bench::scenarios::EXPECTED;

#[test]
fn quick_run_reports_every_figure() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_groundtrail-bench"));
    let bin_dir = exe.parent().expect("target/<profile>").to_path_buf();
    for b in ["groundtrail-collector", "groundtrail-agent"] {
        if !bin_dir.join(b).is_file() {
            eprintln!(
                "SKIPPED quick_run_reports_every_figure: {} missing (cargo build --workspace --bins)",
                bin_dir.join(b).display()
            );
            return;
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("results.json");
    let start = Instant::now();
    let out = Command::new(&exe)
        .arg("--quick")
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--work-dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run groundtrail-bench");
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "groundtrail-bench --quick failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("| figure"), "no table:\n{stdout}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("results.json")).expect("JSON");
    let figures = doc["figures"].as_array().expect("figures");
    for (_, id, _, _) in EXPECTED {
        let f = figures
            .iter()
            .find(|f| f["id"] == *id)
            .unwrap_or_else(|| panic!("figure {id} missing:\n{stdout}"));
        // A figure the run could not measure must say why (e.g. a collector that stopped
        // answering); the table shows it, and so does this test's output.
        if !f["value"].is_number() {
            assert_eq!(f["verdict"], "not measured", "{f}");
            assert!(!f["note"].as_str().unwrap_or_default().is_empty(), "{f}");
            eprintln!("NOT MEASURED {id}: {}", f["note"]);
        }
    }
    assert_eq!(doc["meta"]["quick"], true);
    assert!(doc["generator"]["records"].as_u64().unwrap_or(0) > 0);
    eprintln!("groundtrail-bench --quick took {took:?}");
    assert!(took < Duration::from_secs(300), "quick run took {took:?}");
}
