//! The simulated region's keys, in memory: lifecycle (create, import,
//! rotate, enable/disable, delete, restore), aliases, and storing keys
//! replicated from a primary. The wrap family is in `wrap`.
//!
//! Pure state plus `ApiError`s: no HTTP, no locking (the caller holds one
//! mutex around the whole store, so every operation is atomic), and every
//! operation validates before it changes anything. Deliberately left out:
//! key rings, policies, dual-authorization deletion, purge, expiration dates
//! and the one-rotation-per-hour limit.

use std::collections::HashMap;
use std::time::SystemTime;

use super::crypto::{self, CryptoError};
use super::error::ApiError;
use super::ids;
use super::key::{
    check_alias, check_root_material, new_version, Key, KeyState, NewKey, MAX_ALIASES,
};

#[derive(Default)]
pub struct Store {
    keys: HashMap<String, Key>,
    next_seq: u64,
}

pub(super) fn crypto_error(e: CryptoError) -> ApiError {
    match e {
        CryptoError::Random => ApiError::internal(e.to_string()),
        CryptoError::Malformed | CryptoError::Authentication => ApiError::bad_ciphertext(),
    }
}

impl Store {
    /// A store holding `keys` (oldest first), as `--state` saved them.
    pub fn from_saved(keys: Vec<Key>) -> Store {
        let mut store = Store::default();
        for mut key in keys {
            store.next_seq += 1;
            key.seq = store.next_seq;
            store.keys.insert(key.id.clone(), key);
        }
        store
    }

    /// Every key, oldest first (what `--state` saves).
    pub fn in_order(&self) -> Vec<&Key> {
        let mut keys: Vec<&Key> = self.keys.values().collect();
        keys.sort_by_key(|k| k.seq);
        keys
    }

    fn resolve(&self, id_or_alias: &str) -> Option<&str> {
        if let Some((id, _)) = self.keys.get_key_value(id_or_alias) {
            return Some(id);
        }
        self.keys
            .values()
            .find(|k| k.aliases.iter().any(|a| a == id_or_alias))
            .map(|k| k.id.as_str())
    }

    /// The key with this id or alias, deleted or not.
    pub fn find(&self, id_or_alias: &str) -> Result<&Key, ApiError> {
        let id = self
            .resolve(id_or_alias)
            .ok_or_else(ApiError::key_not_found)?;
        self.keys.get(id).ok_or_else(ApiError::key_not_found)
    }

    fn find_mut(&mut self, id_or_alias: &str) -> Result<&mut Key, ApiError> {
        let id = self
            .resolve(id_or_alias)
            .ok_or_else(ApiError::key_not_found)?
            .to_owned();
        self.keys.get_mut(&id).ok_or_else(ApiError::key_not_found)
    }

    /// The key, refusing deleted ones with 410.
    pub fn live(&self, id_or_alias: &str) -> Result<&Key, ApiError> {
        let key = self.find(id_or_alias)?;
        if key.state == KeyState::Destroyed {
            return Err(ApiError::key_deleted());
        }
        Ok(key)
    }

    fn live_mut(&mut self, id_or_alias: &str) -> Result<&mut Key, ApiError> {
        let key = self.find_mut(id_or_alias)?;
        if key.state == KeyState::Destroyed {
            return Err(ApiError::key_deleted());
        }
        Ok(key)
    }

    fn alias_owner(&self, alias: &str) -> Option<&str> {
        self.keys
            .values()
            .find(|k| k.aliases.iter().any(|a| a == alias))
            .map(|k| k.id.as_str())
    }

    pub fn create(&mut self, spec: NewKey, now: SystemTime) -> Result<Key, ApiError> {
        if !(2..=90).contains(&spec.name.chars().count()) {
            return Err(ApiError::bad_request(
                "INVALID_FIELD_ERR",
                "A key name is 2 to 90 characters",
            ));
        }
        if spec.aliases.len() > MAX_ALIASES {
            return Err(ApiError::bad_request(
                "KEY_ALIAS_QUOTA_ERR",
                "A key can have at most 5 aliases",
            ));
        }
        for alias in &spec.aliases {
            check_alias(alias)?;
            if self.alias_owner(alias).is_some() {
                return Err(ApiError::conflict(
                    "KEY_ALIAS_NOT_UNIQUE_ERR",
                    format!("The alias {alias:?} is already used in this instance"),
                ));
            }
        }
        let imported = spec.payload.is_some();
        let material = match spec.payload {
            Some(p) if !spec.extractable => {
                check_root_material(&p)?;
                p
            }
            Some(p) if p.is_empty() => {
                return Err(ApiError::bad_body("payload must not be empty"));
            }
            Some(p) => p,
            None => crypto::random_bytes(crypto::KEY_LEN).map_err(crypto_error)?,
        };
        self.next_seq += 1;
        let key = Key {
            id: ids::new_uuid(),
            name: spec.name,
            description: spec.description,
            extractable: spec.extractable,
            imported,
            state: KeyState::Active,
            versions: vec![new_version(material, now)],
            aliases: spec.aliases,
            created: now,
            updated: now,
            rotated: None,
            deleted: None,
            seq: self.next_seq,
        };
        self.keys.insert(key.id.clone(), key.clone());
        Ok(key)
    }

    /// Keys whose state code is in `states`, in creation order: the total
    /// that matched and the page `[offset, offset + limit)`.
    pub fn list(&self, states: &[u8], offset: usize, limit: usize) -> (usize, Vec<&Key>) {
        let mut keys: Vec<&Key> = self
            .keys
            .values()
            .filter(|k| states.contains(&k.state.code()))
            .collect();
        keys.sort_by_key(|k| k.seq);
        let total = keys.len();
        (total, keys.into_iter().skip(offset).take(limit).collect())
    }

    pub fn delete(&mut self, id_or_alias: &str, now: SystemTime) -> Result<Key, ApiError> {
        let key = self.live_mut(id_or_alias)?;
        key.state = KeyState::Destroyed;
        key.deleted = Some(now);
        key.updated = now;
        Ok(key.clone())
    }

    pub fn restore(&mut self, id_or_alias: &str, now: SystemTime) -> Result<Key, ApiError> {
        let key = self.find_mut(id_or_alias)?;
        if key.state != KeyState::Destroyed {
            return Err(ApiError::conflict(
                "KEY_ACTION_INVALID_STATE_ERR",
                "Only a deleted key can be restored",
            ));
        }
        key.state = KeyState::Active;
        key.deleted = None;
        key.updated = now;
        Ok(key.clone())
    }

    pub fn rotate(
        &mut self,
        id_or_alias: &str,
        payload: Option<Vec<u8>>,
        now: SystemTime,
    ) -> Result<Key, ApiError> {
        let key = self.live_mut(id_or_alias)?;
        if key.extractable {
            return Err(ApiError::bad_request(
                "KEY_ROOT_REQ_ERR",
                "Requested action can only be completed with a root key",
            ));
        }
        if key.state != KeyState::Active {
            return Err(ApiError::conflict(
                "KEY_ACTION_INVALID_STATE_ERR",
                "Key is not in a valid state",
            ));
        }
        let material = match (key.imported, payload) {
            (true, Some(p)) => {
                check_root_material(&p)?;
                p
            }
            (true, None) => {
                return Err(ApiError::bad_body(
                    "Rotating an imported key needs a new payload",
                ));
            }
            (false, Some(_)) => {
                return Err(ApiError::bad_body(
                    "A payload is only accepted for imported keys",
                ));
            }
            (false, None) => crypto::random_bytes(crypto::KEY_LEN).map_err(crypto_error)?,
        };
        key.versions.push(new_version(material, now));
        key.rotated = Some(now);
        key.updated = now;
        Ok(key.clone())
    }

    pub fn set_enabled(
        &mut self,
        id_or_alias: &str,
        enabled: bool,
        now: SystemTime,
    ) -> Result<Key, ApiError> {
        let key = self.live_mut(id_or_alias)?;
        let (from, to) = if enabled {
            (KeyState::Suspended, KeyState::Active)
        } else {
            (KeyState::Active, KeyState::Suspended)
        };
        if key.state != from {
            return Err(ApiError::conflict(
                "KEY_ACTION_INVALID_STATE_ERR",
                "Key is not in a valid state",
            ));
        }
        key.state = to;
        key.updated = now;
        Ok(key.clone())
    }

    pub fn add_alias(
        &mut self,
        id_or_alias: &str,
        alias: &str,
        now: SystemTime,
    ) -> Result<Key, ApiError> {
        check_alias(alias)?;
        let id = self.find(id_or_alias)?.id.clone();
        match self.alias_owner(alias) {
            Some(owner) if owner == id => return self.find(&id).cloned(),
            Some(_) => {
                return Err(ApiError::conflict(
                    "KEY_ALIAS_NOT_UNIQUE_ERR",
                    format!("The alias {alias:?} is already used in this instance"),
                ))
            }
            None => {}
        }
        let key = self.live_mut(&id)?;
        if key.aliases.len() >= MAX_ALIASES {
            return Err(ApiError::bad_request(
                "KEY_ALIAS_QUOTA_ERR",
                "A key can have at most 5 aliases",
            ));
        }
        key.aliases.push(alias.to_owned());
        key.updated = now;
        Ok(key.clone())
    }

    pub fn remove_alias(
        &mut self,
        id_or_alias: &str,
        alias: &str,
        now: SystemTime,
    ) -> Result<Key, ApiError> {
        let key = self.find_mut(id_or_alias)?;
        let before = key.aliases.len();
        key.aliases.retain(|a| a != alias);
        if key.aliases.len() == before {
            return Err(ApiError::new(
                http::StatusCode::NOT_FOUND,
                "KEY_ALIAS_NOT_FOUND_ERR",
                "Alias could not be found",
                format!("The key has no alias {alias:?}"),
            ));
        }
        key.updated = now;
        Ok(key.clone())
    }

    /// Stores a replicated key under `id` (the primary's, or a remapped one),
    /// replacing any earlier copy but keeping its listing position.
    pub fn apply_replicated(&mut self, mut key: Key, id: String) {
        key.seq = match self.keys.get(&id) {
            Some(old) => old.seq,
            None => {
                self.next_seq += 1;
                self.next_seq
            }
        };
        key.id = id.clone();
        // A replicated alias wins over a stale local holder of the same name.
        for other in self.keys.values_mut().filter(|k| k.id != id) {
            other.aliases.retain(|a| !key.aliases.contains(a));
        }
        self.keys.insert(id, key);
    }
}
