//! `pki`: a small certificate authority, so that mTLS between agents and the collector takes
//! three commands instead of an afternoon with openssl.
//!
//! ```text
//! groundtrail-collector pki init  --dir pki [--san collector.example.net] [--san 10.0.0.5]
//! groundtrail-collector pki agent web-1 --dir pki
//! ```
//!
//! `init` writes `ca.pem`/`ca.key` (the CA) and `server.pem`/`server.key` (the collector's
//! certificate for `localhost`, `127.0.0.1`, `::1` and every `--san`). `agent NAME` writes
//! `agents/NAME.pem`/`agents/NAME.key`, a client certificate whose common name is NAME: the
//! name the collector's `[[agents]]` entries match. Private keys are written with mode 0600.
//!
//! The CA's identity (its distinguished name) is fixed, so `agent` can sign with `ca.key`
//! alone: the issuer name and key identifier it writes are derived from the same name and key.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The CA's common name.
const CA_NAME: &str = "Groundtrail CA";

/// Why a PKI command failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} already exists; pass --force to replace it")]
    Exists { path: String },
    #[error("agent name {0:?} must be 1-64 letters, digits, '-', '_' or '.'")]
    BadName(String),
}

/// Files written by a PKI command.
#[derive(Debug, Clone)]
pub struct Written {
    pub files: Vec<PathBuf>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write_file(path: &Path, contents: &str, private: bool, force: bool) -> Result<(), PkiError> {
    if path.exists() && !force {
        return Err(PkiError::Exists {
            path: path.display().to_string(),
        });
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let _ = std::fs::remove_file(path);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(contents.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok(())
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn leaf(
    name: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Creates the CA and the server certificate in `dir`.
pub fn init(dir: &Path, extra_sans: &[String], force: bool) -> Result<Written, PkiError> {
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params()?.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params()?, &ca_key);

    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for s in extra_sans {
        if !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    let server_key = KeyPair::generate()?;
    let server_cert = leaf(
        "groundtrail-collector",
        sans,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?
    .signed_by(&server_key, &issuer)?;

    let files = vec![
        (dir.join("ca.pem"), ca_cert.pem(), false),
        (dir.join("ca.key"), ca_key.serialize_pem(), true),
        (dir.join("server.pem"), server_cert.pem(), false),
        (dir.join("server.key"), server_key.serialize_pem(), true),
    ];
    if !force && let Some((p, _, _)) = files.iter().find(|(p, _, _)| p.exists()) {
        return Err(PkiError::Exists {
            path: p.display().to_string(),
        });
    }
    for (path, pem, private) in &files {
        write_file(path, pem, *private, force)?;
    }
    Ok(Written {
        files: files.into_iter().map(|(p, _, _)| p).collect(),
    })
}

/// Issues a client certificate with common name `name`, signed by the CA in `dir`.
pub fn agent(dir: &Path, name: &str, force: bool) -> Result<Written, PkiError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
    {
        return Err(PkiError::BadName(name.to_string()));
    }
    let ca_key_path = dir.join("ca.key");
    let ca_pem = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
    let ca_key = KeyPair::from_pem(&ca_pem)?;
    let issuer = Issuer::new(ca_params()?, &ca_key);
    let key = KeyPair::generate()?;
    let cert = leaf(
        name,
        vec![name.to_string()],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?
    .signed_by(&key, &issuer)?;
    let cert_path = dir.join("agents").join(format!("{name}.pem"));
    let key_path = dir.join("agents").join(format!("{name}.key"));
    if !force && (cert_path.exists() || key_path.exists()) {
        return Err(PkiError::Exists {
            path: cert_path.display().to_string(),
        });
    }
    write_file(&cert_path, &cert.pem(), false, force)?;
    write_file(&key_path, &key.serialize_pem(), true, force)?;
    Ok(Written {
        files: vec![cert_path, key_path],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundtrail_common::tls;

    /// The generated files make a working mTLS pair: the server config accepts them, the client
    /// config loads them, and the client certificate names the agent.
    #[test]
    fn init_and_agent_produce_working_tls_material() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        init(d, &["collector.example.net".into()], false).unwrap();
        assert!(matches!(init(d, &[], false), Err(PkiError::Exists { .. })));
        agent(d, "web-1", false).unwrap();
        tls::server_config(
            &d.join("server.pem"),
            &d.join("server.key"),
            Some(&d.join("ca.pem")),
        )
        .unwrap();
        tls::client_config(
            &d.join("ca.pem"),
            Some((&d.join("agents/web-1.pem"), &d.join("agents/web-1.key"))),
        )
        .unwrap();
        let cert = &tls::load_certs(&d.join("agents/web-1.pem")).unwrap()[0];
        assert_eq!(tls::certificate_name(cert).as_deref(), Some("web-1"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in ["ca.key", "server.key", "agents/web-1.key"] {
                let mode = std::fs::metadata(d.join(key)).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{key}");
            }
        }
        assert!(matches!(agent(d, "../x", false), Err(PkiError::BadName(_))));
    }
}
