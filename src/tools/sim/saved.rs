//! `failway sim --state FILE`: the region's keys kept across restarts, as
//! the JSON array replication already speaks (material in base64), oldest
//! first so listings keep their order. Written whole after every change,
//! atomically (a temporary file beside it, then a rename), readable by its
//! owner only: it holds key material.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::key::Key;

/// The keys saved in `path`; none when the file does not exist yet.
pub fn load(path: &Path) -> io::Result<Vec<Key>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--state {}: not a saved key list: {e}", path.display()),
        )
    })
}

/// Replaces `path` with `keys`.
pub fn save(path: &Path, keys: &[&Key]) -> io::Result<()> {
    let json = serde_json::to_vec(keys).map_err(io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&json)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::super::store::Store;
    use super::*;

    #[test]
    fn saved_keys_come_back_in_order_with_their_material() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        assert!(load(&path).unwrap().is_empty(), "no file yet: no keys");
        let mut store = Store::default();
        let now = std::time::SystemTime::now();
        let spec = |name: &str| super::super::key::NewKey {
            name: name.to_owned(),
            description: None,
            extractable: false,
            payload: None,
            aliases: Vec::new(),
        };
        let a = store.create(spec("key-a"), now).unwrap();
        let b = store.create(spec("key-b"), now).unwrap();
        save(&path, &store.in_order()).unwrap();
        let back = Store::from_saved(load(&path).unwrap());
        let ids: Vec<_> = back.in_order().iter().map(|k| k.id.clone()).collect();
        assert_eq!(ids, [a.id.clone(), b.id]);
        assert_eq!(
            back.find(&a.id).unwrap().current().material,
            a.current().material
        );
        std::fs::write(&path, "not json").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("--state") && err.contains("keys.json"),
            "{err}"
        );
    }

    #[test]
    fn a_region_with_a_state_file_finds_its_keys_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let region = || {
            super::super::region::Region::new("r".into(), "i".into(), None, false, false, None)
                .with_saved(path.clone())
                .unwrap()
        };
        let first = region();
        let key = first
            .write(|s, now| {
                s.create(
                    super::super::key::NewKey {
                        name: "kept".into(),
                        description: None,
                        extractable: false,
                        payload: None,
                        aliases: Vec::new(),
                    },
                    now,
                )
            })
            .unwrap();
        drop(first);
        let again = region();
        assert_eq!(again.store().find(&key.id).unwrap().name, "kept");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key material is for its owner only");
    }
}
