//! The digest signing key on disk.
//!
//! Whoever can read the key can forge the trail's history, so it is written with mode 0600
//! from the first byte (never created readable and narrowed afterwards) and refused when
//! group or others can read it (`SigningKey::load`).
//!
//! # One key per chain, unless rotated on purpose
//!
//! The journal records the public half of the key its digest chains are signed with
//! ([`crate::journal::SigningKeyRecord`]). At start-up ([`provide`]):
//! - no key file and no digest yet (a fresh start, the embedded default): a key is generated;
//! - no key file but digests exist: **refused**. Generating a new key would continue the chains
//!   under a key nobody lists, and every older digest would stop validating against the keys
//!   the collector publishes. The message says how to restore the key, or how to rotate on
//!   purpose, and the old public key is written beside the key file for that;
//! - a key file whose fingerprint is not the recorded one, with digests: **refused** the same
//!   way, unless the recorded key's public key is listed in `[[signing.retired_keys]]` (a
//!   rotation on purpose: `ListPublicKeys` keeps publishing it). The new key is then recorded.

use std::io::Write;
use std::path::{Path, PathBuf};

use groundtrail_common::trail::{SigningError, SigningKey};

use crate::config::RetiredKey;
use crate::journal::{Journal, JournalError, SigningKeyRecord};

/// Why the key could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Signing(#[from] SigningError),
    #[error(
        "{path} already exists; pass --force to replace it (old digests then need its public key listed as retired)"
    )]
    Exists { path: String },
    #[error("cannot write signing key {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "signing key {path} is missing, but the journal holds digest chains signed with key {fingerprint} (in use since {since}); refusing to start under a new key, which would leave every earlier digest signed by a key the collector no longer lists.\n{help}"
    )]
    Missing {
        path: String,
        fingerprint: String,
        since: String,
        help: String,
    },
    #[error(
        "signing key {path} (fingerprint {found}) is not the key the journal's digest chains are signed with ({fingerprint}, in use since {since}); refusing to continue the chains under it.\n{help}"
    )]
    Changed {
        path: String,
        found: String,
        fingerprint: String,
        since: String,
        help: String,
    },
    #[error("[[signing.retired_keys]] {path}: {why}")]
    Retired { path: String, why: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What [`provide`] did besides returning the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// The key file was there and is the one the chains are signed with (or no chain exists).
    Loaded,
    /// No key file and no digest: a new key was written.
    Generated,
    /// The key changed on purpose: the previous one (this fingerprint) is a retired key.
    Rotated { previous: String },
}

/// Loads (or, on a fresh start, generates) the key at `path` and checks it against the key the
/// journal's digest chains are signed with (see the module doc). Records the key in the
/// journal; the caller flushes it.
pub fn provide(
    path: &Path,
    journal: &Journal,
    retired: &[RetiredKey],
) -> Result<(SigningKey, KeyOutcome), KeyError> {
    let has_digests = journal.has_digests()?;
    let recorded = journal.signing_key()?;
    let shown = path.display().to_string();
    let (key, mut outcome) = if path.exists() {
        (SigningKey::load(path)?, KeyOutcome::Loaded)
    } else if has_digests {
        let (fingerprint, since, help) = match &recorded {
            Some(r) => (r.fingerprint.clone(), r.since.clone(), help(path, Some(r))),
            None => (
                "(not recorded)".into(),
                "(unknown)".into(),
                help(path, None),
            ),
        };
        return Err(KeyError::Missing {
            path: shown,
            fingerprint,
            since,
            help,
        });
    } else {
        let key = SigningKey::generate()?;
        write_key(path, &key, false)?;
        (key, KeyOutcome::Generated)
    };
    if let Some(r) = &recorded
        && r.fingerprint != key.fingerprint()
        && has_digests
    {
        if !retired_fingerprints(retired)?.contains(&r.fingerprint) {
            return Err(KeyError::Changed {
                path: shown,
                found: key.fingerprint().to_string(),
                fingerprint: r.fingerprint.clone(),
                since: r.since.clone(),
                help: help(path, Some(r)),
            });
        }
        outcome = KeyOutcome::Rotated {
            previous: r.fingerprint.clone(),
        };
    }
    if recorded.as_ref().map(|r| r.fingerprint.as_str()) != Some(key.fingerprint()) {
        journal.set_signing_key(&SigningKeyRecord {
            fingerprint: key.fingerprint().to_string(),
            public_key_pem: key.public_key_pem(),
            since: groundtrail_common::time::json_time(key_file_time(path)),
        })?;
    }
    Ok((key, outcome))
}

/// When the key file was written (its mtime, not after now): when the key started signing, as
/// `ListPublicKeys` reports it.
fn key_file_time(path: &Path) -> chrono::DateTime<chrono::Utc> {
    let now = groundtrail_common::time::now_secs();
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(chrono::DateTime::<chrono::Utc>::from)
        .map(|t| t.min(now))
        .unwrap_or(now)
}

/// Fingerprints of the configured retired public keys.
fn retired_fingerprints(retired: &[RetiredKey]) -> Result<Vec<String>, KeyError> {
    retired
        .iter()
        .map(|r| {
            let err = |why: String| KeyError::Retired {
                path: r.public_key_file.display().to_string(),
                why,
            };
            let text =
                std::fs::read_to_string(&r.public_key_file).map_err(|e| err(e.to_string()))?;
            let der = crate::api::public_key_der_from_pem(&text).map_err(err)?;
            Ok(groundtrail_common::trail::fingerprint(&der))
        })
        .collect()
}

/// Where the recorded public key is written for `[[signing.retired_keys]]`.
fn retired_public_key_path(path: &Path, fingerprint: &str) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new(""));
    dir.join(format!("retired-{fingerprint}.pub.pem"))
}

/// How to get out of a refused start: restore the key, or rotate on purpose. Writes the
/// recorded public key beside the key file (it is public; a failure only changes the text).
fn help(path: &Path, recorded: Option<&SigningKeyRecord>) -> String {
    let shown = path.display();
    let restore = format!(
        "To continue the chains, put the original key back at {shown} (from a backup; mode 0600)."
    );
    let Some(r) = recorded else {
        return format!(
            "{restore} To rotate on purpose, run `groundtrail-collector keygen --out {shown}` and list the old key's public key (ListPublicKeys or `keygen` printed it) under [[signing.retired_keys]] with the time it was in use."
        );
    };
    let pub_path = retired_public_key_path(path, &r.fingerprint);
    let written = pub_path.exists() || std::fs::write(&pub_path, &r.public_key_pem).is_ok();
    let pub_shown = if written {
        format!("{} (written there from the journal)", pub_path.display())
    } else {
        format!(
            "a file holding this public key from the journal:\n{}",
            r.public_key_pem
        )
    };
    let until = groundtrail_common::time::json_time(groundtrail_common::time::now_secs());
    format!(
        "{restore} To rotate to a new key on purpose, keep (or create with `groundtrail-collector keygen --out {shown}`) the new key and list the old public key, {pub_shown}, in the config:\n[[signing.retired_keys]]\npublic_key_file = \"{}\"\nvalid_from = \"{}\"\nvalid_until = \"{until}\"\nso that ListPublicKeys keeps publishing it and older digests still validate.",
        pub_path.display(),
        r.since,
    )
}

/// Writes `key` as PKCS#8 PEM with mode 0600. Refuses to replace a file unless `force`.
pub fn write_key(path: &Path, key: &SigningKey, force: bool) -> Result<(), KeyError> {
    let shown = path.display().to_string();
    let werr = |source| KeyError::Write {
        path: shown.clone(),
        source,
    };
    if path.exists() && !force {
        return Err(KeyError::Exists { path: shown });
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(werr)?;
    }
    let pem = key.to_pem()?;
    // Write a private temp file and rename it over the target: a crash never leaves a
    // half-written key, and the mode is 0600 before any byte is written.
    let tmp = path.with_extension("pem.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(werr)?;
    f.write_all(pem.as_bytes()).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(werr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{ChainHead, PendingDigest};

    fn journal(dir: &Path) -> Journal {
        Journal::open(&dir.join("journal")).unwrap()
    }

    /// Makes the journal hold a digest chain, as after the first digest.
    fn sign_something(j: &Journal) {
        let head = ChainHead {
            end_time: "2026-01-01T00:00:00Z".into(),
            bucket: "b".into(),
            key: "dk".into(),
            sha256: "00".into(),
            signature: "00".into(),
        };
        let pending = PendingDigest {
            key: "dk".into(),
            document: "{}".into(),
            signature: "00".into(),
        };
        j.record_digest("local", "111122223333", "us-east-1", &[], &head, &pending)
            .unwrap();
    }

    #[test]
    fn generates_once_with_private_mode_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let path = dir.path().join("a/b/key.pem");
        let (k1, outcome) = provide(&path, &j, &[]).unwrap();
        assert_eq!(outcome, KeyOutcome::Generated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let (k2, outcome) = provide(&path, &j, &[]).unwrap();
        assert_eq!(outcome, KeyOutcome::Loaded);
        assert_eq!(k1.fingerprint(), k2.fingerprint());
        assert_eq!(
            j.signing_key().unwrap().unwrap().fingerprint,
            k1.fingerprint()
        );
        assert!(matches!(
            write_key(&path, &k1, false),
            Err(KeyError::Exists { .. })
        ));
        write_key(&path, &SigningKey::generate().unwrap(), true).unwrap();
        assert_ne!(
            SigningKey::load(&path).unwrap().fingerprint(),
            k1.fingerprint()
        );
    }

    #[test]
    fn once_digests_exist_a_missing_or_changed_key_is_refused_unless_retired() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let path = dir.path().join("key.pem");
        let (old, _) = provide(&path, &j, &[]).unwrap();
        sign_something(&j);

        std::fs::remove_file(&path).unwrap();
        let err = provide(&path, &j, &[]).unwrap_err();
        assert!(matches!(err, KeyError::Missing { .. }), "{err}");
        assert!(!path.exists(), "no new key may be generated");
        let text = err.to_string();
        assert!(text.contains(old.fingerprint()), "{text}");
        assert!(text.contains("[[signing.retired_keys]]"), "{text}");
        let public = dir
            .path()
            .join(format!("retired-{}.pub.pem", old.fingerprint()));
        assert_eq!(
            std::fs::read_to_string(&public).unwrap(),
            old.public_key_pem(),
            "the old public key is handed back for retired_keys"
        );

        write_key(&path, &SigningKey::generate().unwrap(), false).unwrap();
        let err = provide(&path, &j, &[]).unwrap_err();
        assert!(matches!(err, KeyError::Changed { .. }), "{err}");

        let retired = RetiredKey {
            public_key_file: public,
            valid_from: "2026-01-01T00:00:00Z".into(),
            valid_until: "2026-01-02T00:00:00Z".into(),
        };
        let (new, outcome) = provide(&path, &j, std::slice::from_ref(&retired)).unwrap();
        assert_eq!(
            outcome,
            KeyOutcome::Rotated {
                previous: old.fingerprint().to_string()
            }
        );
        assert_eq!(
            j.signing_key().unwrap().unwrap().fingerprint,
            new.fingerprint()
        );
        // The new key is now the recorded one: later starts need no retired entry for it.
        assert_eq!(provide(&path, &j, &[]).unwrap().1, KeyOutcome::Loaded);
    }
}
