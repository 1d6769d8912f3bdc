//! Files failway re-reads when they change: the configuration, the TLS
//! certificate and key, the admin token and the probes' Authorization. One
//! notion of "changed" serves all of them: a file's [`Stamp`] is its path
//! resolved through symlinks (Kubernetes swaps a Secret's `..data` link),
//! its device and inode (a rotation by rename), its size, and its
//! modification and change times to the nanosecond (an in-place rewrite of
//! the same size). A missing file has no stamp.
//!
//! It does not watch by itself: callers look when they need the value
//! ([`Cached::get`]) or poll ([`stamp`]) at their own pace.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// What tells one version of a file from another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    resolved: PathBuf,
    dev: u64,
    ino: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

/// The file's stamp now; `None` when it cannot be looked at (missing).
pub fn stamp(path: &Path) -> Option<Stamp> {
    let resolved = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&resolved).ok()?;
    Some(Stamp {
        resolved,
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        modified: (meta.mtime(), meta.mtime_nsec()),
        changed: (meta.ctime(), meta.ctime_nsec()),
    })
}

/// A value read from a file, read again only when the file changed.
pub struct Cached<T> {
    path: PathBuf,
    cached: Mutex<Option<(Stamp, T)>>,
}

impl<T: Clone> Cached<T> {
    pub fn new(path: PathBuf) -> Cached<T> {
        Cached {
            path,
            cached: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value held while the file's stamp is unchanged, else what `read`
    /// makes of the file now (kept when it succeeds). A file that cannot be
    /// looked at is handed to `read`, whose error then names the cause.
    pub fn get<E>(&self, read: impl FnOnce(&Path) -> Result<T, E>) -> Result<T, E> {
        let now = stamp(&self.path);
        if let (Some(now), Some((seen, value))) = (&now, lock(&self.cached).as_ref()) {
            if now == seen {
                return Ok(value.clone());
            }
        }
        let value = read(&self.path)?;
        if let Some(now) = now {
            *lock(&self.cached) = Some((now, value.clone()));
        }
        Ok(value)
    }
}

/// Every value guarded here is whole after any single assignment.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn read_counting<'a>(reads: &'a Cell<u32>) -> impl Fn(&Path) -> std::io::Result<String> + 'a {
        move |p| {
            reads.set(reads.get() + 1);
            std::fs::read_to_string(p)
        }
    }

    #[test]
    fn a_value_is_read_again_only_when_the_file_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one").unwrap();
        let cached = Cached::new(path.clone());
        let reads = Cell::new(0);
        assert_eq!(cached.get(read_counting(&reads)).unwrap(), "one");
        assert_eq!(cached.get(read_counting(&reads)).unwrap(), "one");
        assert_eq!(reads.get(), 1, "unchanged: not read again");

        // Rewritten in place with the same size.
        std::fs::write(&path, "two").unwrap();
        assert_eq!(cached.get(read_counting(&reads)).unwrap(), "two");

        // Replaced by rename, as a rotation does.
        let fresh = dir.path().join("token.new");
        std::fs::write(&fresh, "six").unwrap();
        std::fs::rename(&fresh, &path).unwrap();
        assert_eq!(cached.get(read_counting(&reads)).unwrap(), "six");
        assert_eq!(reads.get(), 3);
    }

    #[test]
    fn a_symlink_swap_is_a_change_and_a_missing_file_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "first").unwrap();
        std::fs::write(&b, "other").unwrap();
        let link = dir.path().join("current");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let before = stamp(&link).unwrap();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&b, &link).unwrap();
        assert_ne!(stamp(&link).unwrap(), before);

        let gone = Cached::<String>::new(dir.path().join("missing"));
        let err = gone.get(|p| std::fs::read_to_string(p)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert!(stamp(&dir.path().join("missing")).is_none());
    }
}
