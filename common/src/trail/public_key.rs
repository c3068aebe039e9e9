//! Reading digest public keys: PEM blocks and the two DER shapes a key comes in.
//!
//! AWS publishes and fingerprints a digest key as PKCS#1 `RSAPublicKey` DER; operators hand
//! keys over as PEM, either `RSA PUBLIC KEY` (PKCS#1, what `keygen` prints) or `PUBLIC KEY`
//! (X.509 `SubjectPublicKeyInfo`, what OpenSSL prints). The parsing is x509-parser's (already
//! the TLS code's certificate parser) rather than our own DER walk.

use x509_parser::prelude::FromDer;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The first PEM block in `text`: its label and its DER.
pub fn pem_decode(text: &str) -> Result<(String, Vec<u8>), String> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(text.as_bytes()).map_err(|e| format!("PEM: {e}"))?;
    Ok((pem.label, pem.contents))
}

/// The PKCS#1 `RSAPublicKey` inside an RSA `SubjectPublicKeyInfo`.
pub fn spki_to_pkcs1(der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(der)
        .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err(format!(
            "not an RSA key (algorithm {})",
            spki.algorithm.algorithm
        ));
    }
    let pkcs1 = spki.subject_public_key.data.to_vec();
    if !is_pkcs1_rsa_public_key(&pkcs1) {
        return Err("the RSA key inside is not a PKCS#1 RSAPublicKey".into());
    }
    Ok(pkcs1)
}

/// Whether `der` is exactly one PKCS#1 `RSAPublicKey` (`SEQUENCE { INTEGER, INTEGER }`), what
/// python-rsa's `load_pkcs1(..., 'DER')` (and so the AWS CLI) accepts.
pub fn is_pkcs1_rsa_public_key(der: &[u8]) -> bool {
    RSAPublicKey::from_der(der).is_ok_and(|(rest, _)| rest.is_empty())
}

/// The DER of a PKCS#1 `RSA PUBLIC KEY` PEM block (what `keygen` prints).
pub fn pkcs1_der_from_pem(text: &str) -> Result<Vec<u8>, String> {
    let (label, der) = pem_decode(text).map_err(|_| {
        "no \"-----BEGIN RSA PUBLIC KEY-----\" block (PKCS#1, as keygen prints it)".to_string()
    })?;
    if label != "RSA PUBLIC KEY" {
        return Err(format!(
            "a {label:?} PEM block; expected \"RSA PUBLIC KEY\" (PKCS#1, as keygen prints it)"
        ));
    }
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trail::signing::{SigningKey, pem_encode};

    #[test]
    fn both_pem_shapes_give_the_pkcs1_key() {
        let key = SigningKey::generate().unwrap();
        let pkcs1 = key.public_key_der().to_vec();
        assert!(is_pkcs1_rsa_public_key(&pkcs1));
        assert!(!is_pkcs1_rsa_public_key(b"\x30\x00"));
        assert_eq!(pkcs1_der_from_pem(&key.public_key_pem()).unwrap(), pkcs1);
        assert!(pkcs1_der_from_pem("junk").is_err());
        // The same key as an X.509 SubjectPublicKeyInfo (`PUBLIC KEY`), built by hand:
        // SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING { 0, RSAPublicKey } }.
        let alg = [
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
            0x00,
        ];
        let mut bits = vec![0u8];
        bits.extend_from_slice(&pkcs1);
        let tlv = |tag: u8, body: &[u8]| {
            let mut out = vec![tag];
            let n = body.len();
            if n < 0x80 {
                out.push(n as u8);
            } else {
                out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
            }
            out.extend_from_slice(body);
            out
        };
        let mut inner = alg.to_vec();
        inner.extend(tlv(0x03, &bits));
        let spki = tlv(0x30, &inner);
        let pem = pem_encode("PUBLIC KEY", &spki);
        let (label, der) = pem_decode(&format!("a comment line\n{pem}")).unwrap();
        assert_eq!(label, "PUBLIC KEY");
        assert_eq!(spki_to_pkcs1(&der).unwrap(), pkcs1);
        assert!(
            pkcs1_der_from_pem(&pem)
                .unwrap_err()
                .contains("\"PUBLIC KEY\"")
        );
        assert!(spki_to_pkcs1(&pkcs1).is_err());
    }
}
