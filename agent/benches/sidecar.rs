//! Sidecar benchmark (filled in below in later commits).
fn main() {}
