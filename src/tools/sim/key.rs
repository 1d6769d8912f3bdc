//! A key as the simulator stores it, which is also the replication wire
//! format: a primary sends the whole key after each change, so applying
//! changes in order is idempotent and alias removals need no message of
//! their own. Key material travels base64-encoded; the control port it
//! travels over only listens on loopback. Key states other than active,
//! suspended and destroyed (pre-activation, deactivated by expiry) are not
//! modelled.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::ids;

/// Aliases a key may carry (Key Protect's limit).
pub const MAX_ALIASES: usize = 5;

/// Key Protect's key states that the simulator uses; numbers are the API's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Active,
    Suspended,
    Destroyed,
}

impl KeyState {
    pub fn code(self) -> u8 {
        match self {
            KeyState::Active => 1,
            KeyState::Suspended => 2,
            KeyState::Destroyed => 5,
        }
    }
}

/// One version of a key's material; wraps name it by id, and the id is
/// derived from the material (see `ids::version_id`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    pub id: String,
    #[serde(with = "b64")]
    pub material: Vec<u8>,
    pub created: SystemTime,
}

/// A key, as stored and as replicated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Key {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// Standard key (material readable) rather than root key (wrap only).
    pub extractable: bool,
    pub imported: bool,
    pub state: KeyState,
    /// Oldest first; the last is current. Never empty.
    pub versions: Vec<Version>,
    pub aliases: Vec<String>,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub rotated: Option<SystemTime>,
    pub deleted: Option<SystemTime>,
    /// Creation order in this store, for listing.
    #[serde(skip)]
    pub seq: u64,
}

impl Key {
    pub fn current(&self) -> &Version {
        // `versions` is never empty: every constructor pushes one.
        &self.versions[self.versions.len() - 1]
    }
}

/// What a create or import asks for.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub description: Option<String>,
    pub extractable: bool,
    pub payload: Option<Vec<u8>>,
    pub aliases: Vec<String>,
}

pub fn new_version(material: Vec<u8>, now: SystemTime) -> Version {
    Version {
        id: ids::version_id(&material),
        material,
        created: now,
    }
}

pub fn check_alias(alias: &str) -> Result<(), ApiError> {
    let ok_chars = alias
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if !(2..=90).contains(&alias.len()) || !ok_chars || ids::is_uuid(alias) {
        return Err(ApiError::bad_request(
            "INVALID_FIELD_ERR",
            "An alias is 2 to 90 characters of letters, digits, '-' and '_', and not a UUID",
        ));
    }
    Ok(())
}

pub fn check_root_material(payload: &[u8]) -> Result<(), ApiError> {
    if matches!(payload.len(), 16 | 24 | 32) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "INVALID_FIELD_ERR",
            "Imported root key material must be 128, 192 or 256 bits",
        ))
    }
}

/// Serde for key material as base64 in the replication JSON.
mod b64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::tools::sim::api::b64_encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        crate::tools::sim::api::b64_decode(&text)
            .map_err(|e| serde::de::Error::custom(format_args!("key material is not base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn material_is_base64_in_the_replication_json() {
        let version = new_version(vec![0xfb, 0xff, 0x00], SystemTime::UNIX_EPOCH);
        let json = serde_json::to_value(&version).unwrap();
        assert_eq!(json["material"], "+/8A");
        let back: Version = serde_json::from_value(json).unwrap();
        assert_eq!(back.material, version.material);
    }

    #[test]
    fn material_that_is_not_base64_is_refused_by_name() {
        let mut json = serde_json::to_value(new_version(vec![1], SystemTime::UNIX_EPOCH)).unwrap();
        json["material"] = "Zm9v!A".into();
        let err = serde_json::from_value::<Version>(json).unwrap_err();
        assert!(
            err.to_string().contains("key material is not base64"),
            "{err}"
        );
    }
}
