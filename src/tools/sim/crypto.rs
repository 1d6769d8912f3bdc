//! Wrapping and unwrapping with real authenticated encryption (AES-256-GCM
//! from `ring`), so a ciphertext only unwraps where the key material is.
//!
//! Ciphertext layout (then base64 on the wire):
//! `format (1 byte, = 1) | key version id (16 bytes) | nonce (12) | sealed`.
//! The header and the caller's `aad` strings (length-prefixed) are GCM's
//! additional data, so tampering with any byte, or unwrapping with other
//! `aad`, fails authentication. The key id is deliberately not bound: a copy
//! of the key under another id (`--remap-ids`, or the same material imported
//! twice) unwraps the same ciphertexts, as Key Protect documents for keys
//! imported into two regions. This is not Key Protect's own format, which is
//! opaque and undocumented; clients must treat ciphertexts as opaque anyway.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use thiserror::Error;

const FORMAT: u8 = 1;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + 16 + NONCE_LEN;
/// Size of generated key material and data encryption keys.
pub const KEY_LEN: usize = 32;

/// Why sealing or opening failed.
#[derive(Debug, Error)]
pub enum CryptoError {
    #[error("the system random generator failed")]
    Random,
    #[error("the ciphertext is malformed")]
    Malformed,
    #[error("the ciphertext does not authenticate")]
    Authentication,
}

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| CryptoError::Random)?;
    Ok(out)
}

/// The AES-256 key for `material`: the material itself when it is 32 bytes,
/// otherwise its SHA-256 (128- and 192-bit imports, which `ring` has no
/// GCM for; every holder of the material derives the same key).
fn aead_key(material: &[u8]) -> Result<LessSafeKey, CryptoError> {
    let derived;
    let key: &[u8] = if material.len() == KEY_LEN {
        material
    } else {
        derived = digest::digest(&digest::SHA256, material);
        derived.as_ref()
    };
    let unbound =
        UnboundKey::new(&aead::AES_256_GCM, key).map_err(|_| CryptoError::Authentication)?;
    Ok(LessSafeKey::new(unbound))
}

/// GCM additional data: the ciphertext header, then each `aad` string with
/// its length, so `["ab","c"]` and `["a","bc"]` differ.
fn additional_data(header: &[u8], aad: &[String]) -> Vec<u8> {
    let mut out = header.to_vec();
    for s in aad {
        out.extend_from_slice(&(s.len() as u64).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// Encrypts `plaintext` under `material`, naming key version `version`.
pub fn seal(
    material: &[u8],
    version: [u8; 16],
    plaintext: &[u8],
    aad: &[String],
) -> Result<Vec<u8>, CryptoError> {
    let key = aead_key(material)?;
    let nonce_bytes = random_bytes(NONCE_LEN)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&nonce_bytes);
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + 16);
    out.push(FORMAT);
    out.extend_from_slice(&version);
    out.extend_from_slice(&nonce);
    let ad = additional_data(&out, aad);
    let mut sealed = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(ad),
        &mut sealed,
    )
    .map_err(|_| CryptoError::Authentication)?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The key version a ciphertext names, before any authentication.
pub fn version_of(blob: &[u8]) -> Result<[u8; 16], CryptoError> {
    if blob.len() < HEADER_LEN + aead::AES_256_GCM.tag_len() || blob[0] != FORMAT {
        return Err(CryptoError::Malformed);
    }
    let mut v = [0u8; 16];
    v.copy_from_slice(&blob[1..17]);
    Ok(v)
}

/// Decrypts and authenticates `blob` under `material` with `aad`.
pub fn open(material: &[u8], blob: &[u8], aad: &[String]) -> Result<Vec<u8>, CryptoError> {
    version_of(blob)?;
    let key = aead_key(material)?;
    let (header, sealed) = blob.split_at(HEADER_LEN);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&header[17..]);
    let mut buf = sealed.to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(additional_data(header, aad)),
            &mut buf,
        )
        .map_err(|_| CryptoError::Authentication)?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aad(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn round_trip_and_authentication() {
        let material = random_bytes(KEY_LEN).unwrap();
        let version = [7u8; 16];
        let ct = seal(&material, version, b"secret dek", &aad(&["ab", "c"])).unwrap();
        assert_eq!(version_of(&ct).unwrap(), version);
        assert_eq!(
            open(&material, &ct, &aad(&["ab", "c"])).unwrap(),
            b"secret dek"
        );
        assert!(matches!(
            open(&material, &ct, &aad(&["a", "bc"])),
            Err(CryptoError::Authentication)
        ));
        assert!(open(&material, &ct, &[]).is_err());
        let other = random_bytes(KEY_LEN).unwrap();
        assert!(open(&other, &ct, &aad(&["ab", "c"])).is_err());
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert!(
                open(&material, &bad, &aad(&["ab", "c"])).is_err(),
                "byte {i}"
            );
        }
        assert!(matches!(
            open(&material, &ct[..20], &[]),
            Err(CryptoError::Malformed)
        ));
    }

    #[test]
    fn short_material_is_usable() {
        let material = random_bytes(16).unwrap();
        let ct = seal(&material, [1; 16], b"x", &[]).unwrap();
        assert_eq!(open(&material, &ct, &[]).unwrap(), b"x");
    }
}
