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
            .ok_or_else(ApiError::bad_ciphertext)?;
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
