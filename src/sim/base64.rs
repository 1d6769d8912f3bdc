//! Standard base64 (RFC 4648 §4, `+` `/`, `=` padding), the encoding Key
//! Protect uses for key material, plaintexts and ciphertexts.
//!
//! Small on purpose: no dependency in the tree offers it. Decoding accepts
//! input with or without padding, as clients differ, but rejects anything
//! outside the alphabet (whitespace included) and non-zero trailing bits, so a
//! tampered ciphertext is not silently "repaired". No URL-safe alphabet, no
//! streaming.

use thiserror::Error;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Why a string is not valid base64.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("invalid base64 character at offset {0}")]
    InvalidByte(usize),
    #[error("invalid base64 length or padding")]
    InvalidLength,
}

/// Encodes `data` with padding.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes `text`; padding is optional but, when present, must be right.
pub fn decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    let bytes = text.as_bytes();
    let body = match bytes.len() % 4 {
        0 if bytes.ends_with(b"==") => &bytes[..bytes.len() - 2],
        0 if bytes.ends_with(b"=") => &bytes[..bytes.len() - 1],
        _ => bytes,
    };
    if body.len() % 4 == 1 {
        return Err(DecodeError::InvalidLength);
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    for (ci, chunk) in body.chunks(4).enumerate() {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = value(c).ok_or(DecodeError::InvalidByte(ci * 4 + i))?;
            n |= v << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        // Bits left over after the last byte must be zero (canonical form).
        if n & (0xFF_FFFF >> (8 * produced)) != 0 {
            return Err(DecodeError::InvalidLength);
        }
        for i in 0..produced {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_round_trip() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(encode(plain.as_bytes()), enc);
            assert_eq!(decode(enc).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn all_byte_values_round_trip_and_padding_is_optional() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..data.len() {
            let enc = encode(&data[..len]);
            assert_eq!(decode(&enc).unwrap(), &data[..len]);
            assert_eq!(decode(enc.trim_end_matches('=')).unwrap(), &data[..len]);
        }
        assert_eq!(encode(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode("Zm9v!A"), Err(DecodeError::InvalidByte(4)));
        assert_eq!(decode("Zm 9vA=="), Err(DecodeError::InvalidByte(2)));
        assert_eq!(decode("Z"), Err(DecodeError::InvalidLength));
        assert_eq!(decode("Zm=v"), Err(DecodeError::InvalidByte(2)));
        // Non-zero trailing bits: "Zh==" would decode to "f" too.
        assert_eq!(decode("Zh=="), Err(DecodeError::InvalidLength));
        assert_eq!(decode("===="), Err(DecodeError::InvalidByte(0)));
    }
}
