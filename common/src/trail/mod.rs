//! The trail as AWS CloudTrail writes it: object key names, the digest document, and the
//! signature that chains digests together. Both the collector (which writes) and
//! `validate-logs` (which checks) use these, so a format mistake cannot hide in agreement
//! between two copies of the same logic.

pub mod digest;
pub mod keys;
pub mod public_key;
pub mod signing;

pub use digest::{DigestDocument, DigestLogFile, DigestSignature};
pub use keys::{FileKind, TrailLayout, unique16};
pub use signing::{
    SigningError, SigningKey, fingerprint, sha256_hex, signing_string, verify_signature,
};
