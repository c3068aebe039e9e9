//! The digest signing key on disk.
//!
//! Whoever can read the key can forge the trail's history, so it is written with mode 0600
//! from the first byte (never created readable and narrowed afterwards) and refused when
//! group or others can read it (`SigningKey::load`).

use std::io::Write;
use std::path::Path;

use groundtrail_common::trail::{SigningError, SigningKey};

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
}

/// Loads the key at `path`, or generates and writes one (mode 0600, parent directories
/// created) when there is no file. Returns the key and whether it was generated.
pub fn load_or_generate(path: &Path) -> Result<(SigningKey, bool), KeyError> {
    if path.exists() {
        return Ok((SigningKey::load(path)?, false));
    }
    let key = SigningKey::generate()?;
    write_key(path, &key, false)?;
    Ok((key, true))
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

    #[test]
    fn generates_once_with_private_mode_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/key.pem");
        let (k1, generated) = load_or_generate(&path).unwrap();
        assert!(generated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let (k2, generated) = load_or_generate(&path).unwrap();
        assert!(!generated);
        assert_eq!(k1.fingerprint(), k2.fingerprint());
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
}
