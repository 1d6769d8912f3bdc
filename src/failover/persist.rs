//! Persisting the failover state (`state.path`): atomic replace (temp file
//! in the same folder, fsync, rename, fsync of the folder), so a crash leaves
//! either the old or the new state, never a torn one. Loading refuses a
//! corrupt or unreadable file instead of silently starting fresh: forgetting
//! the replica-writes latch could lose data on failback.
//!
//! The single-pair form writes one state. The `[[service]]` form writes
//! `{"services": {NAME: state, ...}}`, each service replacing only its own
//! entry (under one lock, so two services saving at once lose nothing);
//! entries of services no longer configured are kept. A single-state file
//! loads as the service named `default`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::machine::{State, StateError};

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("state.path {path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("state.path {path}: corrupt state file ({source}); move it away only after checking whether writes were accepted on the replica")]
    Corrupt {
        path: String,
        #[source]
        source: StateError,
    },
    #[error("state.path {path}: cannot write: {source}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("state.path {path}: cannot write the state file ({source}); failway replaces it at every change, so its folder must be writable, or a failover and the replica-writes latch would not survive a restart")]
    Unwritable {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// The state file, or one service's entry in it.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    /// `[[service]]` form: the entry this handle reads and writes.
    service: Option<String>,
    /// Shared by the services' handles of one file.
    lock: Arc<Mutex<()>>,
}

impl StateFile {
    pub fn new(path: PathBuf) -> StateFile {
        StateFile {
            path,
            service: None,
            lock: Arc::default(),
        }
    }

    /// The handle for `service`'s entry, sharing this one's lock.
    pub fn for_service(&self, service: &str) -> StateFile {
        StateFile {
            path: self.path.clone(),
            service: Some(service.to_owned()),
            lock: self.lock.clone(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, source: StateError) -> PersistError {
        PersistError::Corrupt {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// The persisted state, `None` when no file (or no entry) exists yet.
    pub fn load(&self) -> Result<Option<State>, PersistError> {
        let Some(service) = &self.service else {
            return self.load_single();
        };
        let Some(text) = self.read()? else {
            return Ok(None);
        };
        let doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| self.corrupt(StateError::from(e)))?;
        match doc.get("services") {
            Some(map) => match map.get(service) {
                Some(entry) => State::from_json(&entry.to_string())
                    .map(Some)
                    .map_err(|e| self.corrupt(e)),
                None => Ok(None),
            },
            None if service == crate::config::DEFAULT_SERVICE => State::from_json(&text)
                .map(Some)
                .map_err(|e| self.corrupt(e)),
            None => Ok(None),
        }
    }

    fn read(&self) -> Result<Option<String>, PersistError> {
        match fs::read_to_string(&self.path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PersistError::Read {
                path: self.path.display().to_string(),
                source,
            }),
        }
    }

    fn load_single(&self) -> Result<Option<State>, PersistError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(PersistError::Read {
                    path: self.path.display().to_string(),
                    source,
                })
            }
        };
        State::from_json(&text)
            .map(Some)
            .map_err(|source| PersistError::Corrupt {
                path: self.path.display().to_string(),
                source,
            })
    }

    /// The start-up check: writes `state` (the loaded one, or the first)
    /// as [`save`](Self::save) does, so a folder or file that cannot be
    /// written stops the start instead of every later change.
    pub fn save_at_start(&self, state: &State) -> Result<(), PersistError> {
        self.save(state).map_err(|e| match e {
            PersistError::Write { path, source } => PersistError::Unwritable { path, source },
            other => other,
        })
    }

    /// Whether the file holds exactly what [`save`](Self::save) writes for
    /// `state`; `false` when it is missing.
    pub fn holds(&self, state: &State) -> io::Result<bool> {
        if self.service.is_some() {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            return match self.load() {
                Ok(Some(on_disk)) => Ok(&on_disk == state),
                Ok(None) => Ok(false),
                Err(e) => Err(io::Error::other(e.to_string())),
            };
        }
        let on_disk = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let json = state
            .to_json()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(on_disk.strip_suffix(b"\n") == Some(json.as_bytes()))
    }

    /// Writes `state` atomically and durably (for a service: its entry,
    /// the others as they are on disk).
    pub fn save(&self, state: &State) -> Result<(), PersistError> {
        let err = |source| PersistError::Write {
            path: self.path.display().to_string(),
            source,
        };
        let invalid = |e: serde_json::Error| err(io::Error::new(io::ErrorKind::InvalidData, e));
        let Some(service) = &self.service else {
            let json = state.to_json().map_err(invalid)?;
            return self.write(&json);
        };
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut services = serde_json::Map::new();
        if let Some(text) = self.read()? {
            let doc: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| self.corrupt(StateError::from(e)))?;
            match doc.get("services").and_then(|m| m.as_object()) {
                Some(m) => services = m.clone(),
                // A single-pair file: its state is the default service's.
                None => {
                    services.insert(crate::config::DEFAULT_SERVICE.to_owned(), doc);
                }
            }
        }
        let entry: serde_json::Value =
            serde_json::from_str(&state.to_json().map_err(invalid)?).map_err(invalid)?;
        services.insert(service.clone(), entry);
        let doc = serde_json::json!({ "services": services });
        self.write(&serde_json::to_string_pretty(&doc).map_err(invalid)?)
    }

    fn write(&self, json: &str) -> Result<(), PersistError> {
        let err = |source| PersistError::Write {
            path: self.path.display().to_string(),
            source,
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state.json".into());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(json.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            // The rename itself must survive a crash too.
            File::open(&dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            err(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn save_then_load_round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("state.json"));
        assert!(file.load().unwrap().is_none());
        let mut state = State::initial(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        state.replica_writes_latch = true;
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), Some(state));
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{ not json").unwrap();
        let err = StateFile::new(path).load().unwrap_err();
        assert!(matches!(err, PersistError::Corrupt { .. }));
        assert!(err.to_string().contains("corrupt state file"));
    }

    #[test]
    fn holds_tells_a_missing_or_changed_file_from_the_saved_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("state.json"));
        let mut state = State::initial(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert!(!file.holds(&state).unwrap(), "missing");
        file.save(&state).unwrap();
        assert!(file.holds(&state).unwrap());
        state.replica_writes_latch = true;
        assert!(!file.holds(&state).unwrap(), "an older state");
    }

    #[test]
    fn a_start_that_cannot_write_names_the_key_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // A plain file where the folder should be: fails for root too.
        let folder = dir.path().join("state");
        std::fs::write(&folder, "").unwrap();
        let file = StateFile::new(folder.join("state.json"));
        let err = file
            .save_at_start(&State::initial(SystemTime::now()))
            .unwrap_err();
        assert!(matches!(err, PersistError::Unwritable { .. }));
        let msg = err.to_string();
        assert!(msg.starts_with("state.path "), "{msg}");
        assert!(msg.contains(&folder.join("state.json").display().to_string()));
    }

    #[test]
    fn unwritable_folder_is_reported() {
        let file = StateFile::new(PathBuf::from("/nonexistent-dir/x/state.json"));
        let state = State::initial(SystemTime::now());
        assert!(matches!(file.save(&state), Err(PersistError::Write { .. })));
    }
}
