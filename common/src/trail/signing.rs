//! Digest signatures (spec §2.4, §2.5).
//!
//! AWS signs the string
//! `digestEndTime \n bucket/key \n hex(sha256(uncompressed digest)) \n previousSignature-or-null`
//! with RSASSA-PKCS1-v1_5 + SHA-256 and publishes the key as PKCS#1 `RSAPublicKey` DER, whose MD5
//! is the fingerprint named in every digest. The AWS CLI's validator (python-rsa) accepts only
//! PKCS#1 v1.5 and only PKCS#1 DER keys, so nothing here is negotiable.

use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine;
use md5::{Digest, Md5};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;

/// Why a key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot read signing key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "signing key {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions { path: String, mode: u32 },
    #[error("signing key {path} is not a PKCS#8 RSA private key in PEM: {why}")]
    Format { path: String, why: String },
    #[error("RSA operation failed")]
    Crypto,
}

/// The data signing string of one digest. `previous_signature` is `None` for a starting digest,
/// which signs the literal text `null`.
pub fn signing_string(
    digest_end_time: &str,
    bucket: &str,
    key: &str,
    digest_sha256_hex: &str,
    previous_signature: Option<&str>,
) -> String {
    format!(
        "{digest_end_time}\n{bucket}/{key}\n{digest_sha256_hex}\n{}",
        previous_signature.unwrap_or("null")
    )
}

/// Lowercase hex MD5 of the published key bytes (PKCS#1 DER).
pub fn fingerprint(public_key_pkcs1_der: &[u8]) -> String {
    hex::encode(Md5::digest(public_key_pkcs1_der))
}

/// Checks a hex signature over `message` with a PKCS#1 DER public key.
pub fn verify_signature(public_key_pkcs1_der: &[u8], message: &[u8], signature_hex: &str) -> bool {
    let Ok(sig) = hex::decode(signature_hex) else {
        return false;
    };
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key_pkcs1_der)
        .verify(message, &sig)
        .is_ok()
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

/// An RSA key that signs digests.
pub struct SigningKey {
    pair: KeyPair,
    public_der: Vec<u8>,
    fingerprint: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh RSA-2048 key, the size AWS uses.
    pub fn generate() -> Result<SigningKey, SigningError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| SigningError::Crypto)?;
        Ok(SigningKey::from_pair(pair))
    }

    fn from_pair(pair: KeyPair) -> SigningKey {
        let public_der = pair.public_key().as_ref().to_vec();
        let fingerprint = fingerprint(&public_der);
        SigningKey {
            pair,
            public_der,
            fingerprint,
        }
    }

    /// Reads a PKCS#8 PEM key, refusing one that group or others can read: whoever can read it
    /// can forge the trail's history.
    pub fn load(path: &Path) -> Result<SigningKey, SigningError> {
        let shown = path.display().to_string();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|source| SigningError::Read {
                path: shown.clone(),
                source,
            })?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SigningError::Permissions { path: shown, mode });
            }
        }
        let pem = std::fs::read(path).map_err(|source| SigningError::Read {
            path: shown.clone(),
            source,
        })?;
        SigningKey::from_pem(&pem).map_err(|why| SigningError::Format { path: shown, why })
    }

    /// Parses a PKCS#8 PEM private key.
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, String> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|e| e.to_string())?;
        let pair = KeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| e.to_string())?;
        Ok(SigningKey::from_pair(pair))
    }

    /// The private key as PKCS#8 PEM, for `keygen` to write (mode 0600).
    pub fn to_pem(&self) -> Result<String, SigningError> {
        let der = self.pair.as_der().map_err(|_| SigningError::Crypto)?;
        Ok(pem_encode("PRIVATE KEY", der.as_ref()))
    }

    /// The public key as PKCS#1 `RSAPublicKey` DER: what ListPublicKeys publishes.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_der
    }

    /// The public key as PEM (`RSA PUBLIC KEY`, PKCS#1), for people and `openssl`.
    pub fn public_key_pem(&self) -> String {
        pem_encode("RSA PUBLIC KEY", &self.public_der)
    }

    /// MD5 fingerprint of [`SigningKey::public_key_der`].
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Signs `message`; returns the lowercase hex signature stored as `x-amz-meta-signature`.
    pub fn sign_hex(&self, message: &[u8]) -> Result<String, SigningError> {
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
            .map_err(|_| SigningError::Crypto)?;
        Ok(hex::encode(sig))
    }
}

/// PEM armour with 64-column base64 lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two public keys from AWS's "custom validation" documentation (its ListPublicKeys sample
    /// response) with the fingerprints AWS publishes for them.
    const AWS_DOC_KEYS: [(&str, &str); 2] = [
        (
            "MIIBCgKCAQEAn11L2YZ9h7onug2ILi1MWyHiMRsTQjfWE+pHVRLk1QjfWhirG+lpOa8NrwQ/r7Ah5bNL6HepznOU9XTDSfmmnP97mqyc7z/upfZdS/AHhYcGaz7n6Wc/RRBU6VmiPCrAUojuSk6/GjvA8iOPFsYDuBtviXarvuLPlrT9kAd4Lb+rFfR5peEgBEkhlzc5HuWO7S0y+KunqxX6jQBnXGMtxmPBPP0FylgWGNdFtks/4YSKcgqwH0YDcawP9GGGDAeCIqPWIXDLG1jOjRRzWfCmD0iJUkz8vTsn4hq/5ZxRFE7UBAUiVcGbdnDdvVfhF9C3dQiDq3k7adQIziLT0cShgQIDAQAB",
            "8eba5db5bea9b640d1c96a77256fe7f2",
        ),
        (
            "MIIBCgKCAQEApfYL2FiZhpN74LNWVUzhR+VheYhwhYm8w0n5Gf6i95ylW5kBAWKVEmnAQG7BvS5g9SMqFDQx52fW7NWV44IvfJ2xGXT+wT+DgR6ZQ+6yxskQNqV5YcXj4Aa5Zz4jJfsYjDuO2MDTZNIzNvBNzaBJ+r2WIWAJ/Xq54kyF63B6WE38vKuDE7nSd1FqQuEoNBFLPInvgggYe2Ym1Refe2z71wNcJ2kY+q0h1BSHrSM8RWuJIw7MXwF9iQncg9jYzUlNJomozQzAG5wSRfbplcCYNY40xvGd/aAmO0m+Y+XFMrKwtLCwseHPvj843qVno6x4BJN9bpWnoPo9sdsbGoiK3QIDAQAB",
            "8933b39ddc64d26d8e14ffbf6566fee4",
        ),
    ];

    #[test]
    fn fingerprint_matches_aws_documentation() {
        for (value, expected) in AWS_DOC_KEYS {
            let der = base64::engine::general_purpose::STANDARD
                .decode(value)
                .unwrap();
            assert_eq!(fingerprint(&der), expected);
        }
    }

    #[test]
    fn sign_verify_round_trip_and_pem() {
        let key = SigningKey::generate().unwrap();
        assert!(
            base64::engine::general_purpose::STANDARD
                .encode(key.public_key_der())
                .starts_with("MIIBCgKCAQEA"),
            "PKCS#1 DER of a 2048-bit key"
        );
        let msg = signing_string("2015-08-17T15:01:31Z", "b", "k", "ab", None);
        assert!(msg.ends_with("\nnull"));
        let sig = key.sign_hex(msg.as_bytes()).unwrap();
        assert_eq!(sig.len(), 512);
        assert!(verify_signature(key.public_key_der(), msg.as_bytes(), &sig));
        assert!(!verify_signature(key.public_key_der(), b"other", &sig));
        // Deterministic (PKCS#1 v1.5), and the PEM round trip keeps the key.
        let again = SigningKey::from_pem(key.to_pem().unwrap().as_bytes()).unwrap();
        assert_eq!(again.fingerprint(), key.fingerprint());
        assert_eq!(again.sign_hex(msg.as_bytes()).unwrap(), sig);
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_readable_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("gt-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.pem");
        std::fs::write(&path, SigningKey::generate().unwrap().to_pem().unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SigningKey::load(&path),
            Err(SigningError::Permissions { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        SigningKey::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
