//! Embeds the vendored SigmaHQ rules (`packs/sigma-aws-cloudtrail/*.yml`) in the crate, so the
//! built-in `sigma` pack needs no file at run time. Generates `$OUT_DIR/sigma_pack.rs`: a
//! name-ordered list of `(file name, include_str!(...))`.

use std::fmt::Write;
use std::path::Path;

fn main() {
    // The directory cargo runs this script for, read at run time: a build script compiled once
    // and reused for a copy of the crate elsewhere (a shared target directory) must not embed
    // the first copy's path.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest_dir).join("packs/sigma-aws-cloudtrail");
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("packs/sigma-aws-cloudtrail")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .into_string()
                .expect("UTF-8 name")
        })
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .collect();
    names.sort();
    let mut out = String::from(
        "/// The vendored SigmaHQ CloudTrail rules: (file name, text), in name order.\n",
    );
    out.push_str("pub const SIGMA_PACK: &[(&str, &str)] = &[\n");
    for n in &names {
        let path = dir.join(n);
        writeln!(
            out,
            "    ({n:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("sigma_pack.rs");
    std::fs::write(dest, out).expect("write sigma_pack.rs");
}
