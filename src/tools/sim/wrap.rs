//! The wrap family on a stored root key: wrap, unwrap (re-wrapping under
//! the current version when the ciphertext names an older one) and the
//! helpers rewrap builds on. Nothing here changes the store, which is why
//! Key Protect counts these calls as reads.

use super::crypto;
use super::error::ApiError;
use super::ids;
use super::key::{Key, KeyState};
use super::store::{crypto_error, Store};

/// The outcome of an unwrap.
pub struct Unwrapped {
    pub plaintext: Vec<u8>,
    pub version: String,
    /// A fresh ciphertext under the current version, when `version` is older.
    pub rewrapped: Option<(Vec<u8>, String)>,
}

impl Store {
    /// A root key usable for the wrap family.
    fn wrapping_key(&self, id_or_alias: &str) -> Result<&Key, ApiError> {
        let key = self.live(id_or_alias)?;
        if key.extractable {
            return Err(ApiError::bad_request(
                "KEY_ROOT_REQ_ERR",
                "Requested action can only be completed with a root key",
            ));
        }
        if key.state != KeyState::Active {
            return Err(ApiError::unprocessable(
                "KEY_INVALID_STATE_ERR",
                "Key is not in a valid state",
            ));
        }
        Ok(key)
    }

    /// Seals `plaintext` under the current version: (ciphertext, version id).
    pub fn wrap(
        &self,
        id_or_alias: &str,
        plaintext: &[u8],
        aad: &[String],
    ) -> Result<(Vec<u8>, String), ApiError> {
        let v = self.wrapping_key(id_or_alias)?.current();
        let vid = ids::uuid_bytes(&v.id).ok_or_else(ApiError::bad_ciphertext)?;
        let ct = crypto::seal(&v.material, vid, plaintext, aad).map_err(crypto_error)?;
        Ok((ct, v.id.clone()))
    }

    pub fn unwrap(
        &self,
        id_or_alias: &str,
        ciphertext: &[u8],
        aad: &[String],
    ) -> Result<Unwrapped, ApiError> {
        let key = self.wrapping_key(id_or_alias)?;
        let vid = crypto::version_of(ciphertext).map_err(crypto_error)?;
        let vid = ids::uuid_text(&vid);
        let version = key
            .versions
            .iter()
            .find(|v| v.id == vid)
            .ok_or_else(missing_version)?;
        let plaintext = crypto::open(&version.material, ciphertext, aad).map_err(crypto_error)?;
        let rewrapped = if version.id == key.current().id {
            None
        } else {
            Some(self.wrap(id_or_alias, &plaintext, aad)?)
        };
        Ok(Unwrapped {
            plaintext,
            version: vid,
            rewrapped,
        })
    }
}

/// A ciphertext naming a version whose material this key does not hold
/// (wrapped by a key with other material, or after a rotation this copy
/// never got): Key Protect answers 422 with this code.
fn missing_version() -> ApiError {
    ApiError::unprocessable(
        "UNPROCESSABLE_CIPHERTEXT_ERR",
        "The provided ciphertext was not wrapped by any version of this key",
    )
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::tools::sim::key::NewKey;

    fn imported(store: &mut Store, material: &[u8]) -> String {
        let spec = NewKey {
            name: "dup-root".into(),
            description: None,
            extractable: false,
            payload: Some(material.to_vec()),
            aliases: vec![],
        };
        store.create(spec, SystemTime::UNIX_EPOCH).unwrap().id
    }

    fn aad() -> Vec<String> {
        vec!["ctx".into()]
    }

    #[test]
    fn duplicated_material_unwraps_across_instances() {
        let (mut a, mut b) = (Store::default(), Store::default());
        let (ka, kb) = (imported(&mut a, &[3; 32]), imported(&mut b, &[3; 32]));
        assert_ne!(ka, kb, "each instance gives its own key id");
        let (ct, va) = a.wrap(&ka, b"dek", &aad()).unwrap();
        let out = b.unwrap(&kb, &ct, &aad()).unwrap();
        assert_eq!(out.plaintext, b"dek");
        assert_eq!(out.version, va, "same material, same version handle");
    }

    #[test]
    fn rotation_on_one_side_only_is_refused_with_422() {
        let (mut a, mut b) = (Store::default(), Store::default());
        let (ka, kb) = (imported(&mut a, &[3; 32]), imported(&mut b, &[3; 32]));
        a.rotate(&ka, Some(vec![9; 32]), SystemTime::UNIX_EPOCH)
            .unwrap();
        let (ct, _) = a.wrap(&ka, b"dek", &aad()).unwrap();
        let err = b.unwrap(&kb, &ct, &aad()).err().expect("must refuse");
        assert_eq!(err.status.as_u16(), 422);
        assert_eq!(err.code, "UNPROCESSABLE_CIPHERTEXT_ERR");
        // The duplicate rotated with the same material catches up.
        b.rotate(&kb, Some(vec![9; 32]), SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(b.unwrap(&kb, &ct, &aad()).unwrap().plaintext, b"dek");
    }
}
