//! Identifiers: random key and version ids, and the deterministic id a
//! replica started with `--remap-ids` gives its copy of a key.
//!
//! Ids are UUID-shaped (8-4-4-4-12 lower-case hex, version nibble 4) like Key
//! Protect's, so clients that validate them accept the simulator's. Random ids
//! come from `fastrand`: they need to be unique, not secret. Key material and
//! nonces never come from here (see `crypto`).

use ring::digest;

/// A random (version 4) UUID.
pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    fastrand::fill(&mut b);
    format_uuid(b)
}

/// The id a `--remap-ids` replica gives its copy of the primary's key
/// `primary_id`: a UUID made from SHA-256 of the original id, so it differs
/// from it and anyone can predict it (tests, `[[rewrite]]` rehearsals).
pub fn remapped_id(primary_id: &str) -> String {
    let d = digest::digest(
        &digest::SHA256,
        format!("failway-sim remap-ids\0{primary_id}").as_bytes(),
    );
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    format_uuid(b)
}

/// The id of a key version holding `material`: a UUID made from SHA-256 of
/// the material, so two instances that import the same material name the
/// version alike and unwrap each other's ciphertexts (Key Protect's
/// duplicated-key recipe), while different material never shares an id.
pub fn version_id(material: &[u8]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"failway-sim key version\0");
    ctx.update(material);
    let d = ctx.finish();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    format_uuid(b)
}

fn format_uuid(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid_text(&b)
}

/// The 16 bytes of a UUID string (any case, with hyphens), or `None`.
pub fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// The canonical text of 16 UUID bytes, as stored (no bit fixing).
pub fn uuid_text(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Whether `s` looks like a UUID; such names cannot be aliases.
pub fn is_uuid(s: &str) -> bool {
    uuid_bytes(s).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_well_formed_and_round_trip() {
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        let b = uuid_bytes(&id).unwrap();
        assert_eq!(uuid_text(&b), id);
        assert_ne!(new_uuid(), id);
        assert!(uuid_bytes("not-a-uuid").is_none());
        assert!(uuid_bytes("0123456789abcdef0123456789abcdef").is_none());
    }

    #[test]
    fn remapped_ids_are_stable_and_distinct() {
        let a = "6c2bd3c0-5d3f-4b8e-9e7e-0b7c7c1f0a11";
        assert_eq!(remapped_id(a), remapped_id(a));
        assert_ne!(remapped_id(a), a);
        assert_ne!(remapped_id(a), remapped_id("other"));
        assert!(is_uuid(&remapped_id(a)));
    }
}
