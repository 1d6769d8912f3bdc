//! Appends records to the audit file, fsyncs each, and rotates the file at
//! `max_size`: `audit.jsonl` -> `audit.jsonl.1` -> ... -> `audit.jsonl.<keep>`,
//! the oldest dropped.
//!
//! Writes are serialized by a mutex so lines never interleave and rotation
//! never races an append. The file is opened per need and reopened after an
//! error, so a disk that comes back is written to again without a restart.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, Registry};

use super::Record;

/// The audit file could not be written; the path is named, the record is not
/// (it may hold an operator's reason, which is theirs to log or not).
#[derive(Debug, thiserror::Error)]
#[error("cannot write the audit file {path}: {source}")]
pub struct AuditWriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// `failway_audit_write_errors_total`.
#[derive(Clone)]
pub struct AuditMetrics {
    pub write_errors: IntCounter,
}

impl AuditMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<AuditMetrics> {
        let write_errors = IntCounter::new(
            "failway_audit_write_errors_total",
            "Audit records that could not be written (operator actions are then refused; automatic transitions go ahead).",
        )?;
        registry.register(Box::new(write_errors.clone()))?;
        Ok(AuditMetrics { write_errors })
    }
}

struct Open {
    file: File,
    size: u64,
}

/// The audit file of `[audit]`.
pub struct AuditLog {
    path: PathBuf,
    max_size: u64,
    keep: usize,
    open: Mutex<Option<Open>>,
    metrics: Option<AuditMetrics>,
}

impl AuditLog {
    pub fn new(path: PathBuf, max_size: u64, keep: usize, metrics: Option<AuditMetrics>) -> Self {
        AuditLog {
            path,
            max_size,
            keep,
            open: Mutex::new(None),
            metrics,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` and fsyncs it (blocking: call from a blocking
    /// context, or use [`AuditLog::write`]).
    pub fn append(&self, record: &Record) -> Result<(), AuditWriteError> {
        let line = record.to_line();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.append_locked(&mut open, &line);
        if result.is_err() {
            // Reopen next time: the old handle may point at a removed file.
            *open = None;
            if let Some(m) = &self.metrics {
                m.write_errors.inc();
            }
        }
        result.map_err(|source| AuditWriteError {
            path: self.path.clone(),
            source,
        })
    }

    /// Whether the file can be opened for appending (created if absent).
    pub fn check(&self) -> Result<(), AuditWriteError> {
        self.open_file()
            .map(drop)
            .map_err(|source| AuditWriteError {
                path: self.path.clone(),
                source,
            })
    }

    /// [`AuditLog::append`] off the async threads.
    pub async fn write(self: &Arc<Self>, record: Record) -> Result<(), AuditWriteError> {
        let log = Arc::clone(self);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || log.append(&record))
            .await
            .unwrap_or_else(|e| {
                Err(AuditWriteError {
                    path,
                    source: io::Error::other(e.to_string()),
                })
            })
    }

    fn append_locked(&self, open: &mut Option<Open>, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if let Some(o) = open.as_ref() {
            // A file already holding lines is rotated rather than grown past
            // max_size; a lone oversized line still goes in a fresh file.
            if o.size > 0 && o.size + len > self.max_size {
                *open = None;
                self.rotate()?;
            }
        }
        if open.is_none() {
            *open = Some(self.open_file()?);
            let size = open.as_ref().map_or(0, |o| o.size);
            if size > 0 && size + len > self.max_size {
                *open = None;
                self.rotate()?;
                *open = Some(self.open_file()?);
            }
        }
        let Some(o) = open.as_mut() else {
            return Err(io::Error::other("audit file not open"));
        };
        o.file.write_all(line)?;
        o.file.sync_data()?;
        o.size += len;
        Ok(())
    }

    fn open_file(&self) -> io::Result<Open> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let size = file.metadata()?.len();
        Ok(Open { file, size })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&self) -> io::Result<()> {
        if self.keep == 0 {
            return fs::remove_file(&self.path);
        }
        match fs::remove_file(self.rotated(self.keep)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..self.keep).rev() {
            match fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, self.rotated(1))
    }

    /// Every record of the current file and the kept ones, oldest first;
    /// lines that do not parse (a torn last line after a crash) are skipped.
    pub fn read_all(&self) -> io::Result<Vec<Record>> {
        let mut records = Vec::new();
        let files = (1..=self.keep)
            .rev()
            .map(|n| self.rotated(n))
            .chain([self.path.clone()]);
        for file in files {
            let text = match fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            records.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Kind;
    use std::time::SystemTime;

    fn record(reason: &str) -> Record {
        Record {
            reason: Some(reason.to_owned()),
            ..Record::new(Kind::Operator, SystemTime::now())
        }
    }

    #[test]
    fn records_are_appended_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::new(path.clone(), 1 << 20, 5, None);
        log.append(&record("one")).unwrap();
        log.append(&record("two")).unwrap();
        let again = AuditLog::new(path, 1 << 20, 5, None);
        again.append(&record("three")).unwrap();
        let reasons: Vec<_> = again
            .read_all()
            .unwrap()
            .into_iter()
            .filter_map(|r| r.reason)
            .collect();
        assert_eq!(reasons, ["one", "two", "three"]);
    }

    #[test]
    fn rotation_keeps_keep_files_and_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let line_len = record("r00").to_line().len() as u64;
        // Two lines a file.
        let log = AuditLog::new(path.clone(), 2 * line_len, 2, None);
        for i in 0..8 {
            log.append(&record(&format!("r{i:02}"))).unwrap();
        }
        assert!(path.exists() && log.rotated(1).exists() && log.rotated(2).exists());
        assert!(!log.rotated(3).exists());
        for f in [&path, &log.rotated(1), &log.rotated(2)] {
            assert!(fs::metadata(f).unwrap().len() <= 2 * line_len);
        }
        let reasons: Vec<_> = log
            .read_all()
            .unwrap()
            .into_iter()
            .filter_map(|r| r.reason)
            .collect();
        assert_eq!(reasons, ["r02", "r03", "r04", "r05", "r06", "r07"]);
    }

    #[test]
    fn an_unwritable_file_is_an_error_naming_the_path_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-folder").join("audit.jsonl");
        let registry = Registry::new();
        let metrics = AuditMetrics::register(&registry).unwrap();
        let log = AuditLog::new(path.clone(), 1 << 20, 5, Some(metrics.clone()));
        let err = log.append(&record("secret reason")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(!message.contains("secret reason"), "{message}");
        assert_eq!(metrics.write_errors.get(), 1);
        // The folder appears: the next write goes through.
        fs::create_dir(path.parent().unwrap()).unwrap();
        log.append(&record("later")).unwrap();
        assert_eq!(log.read_all().unwrap().len(), 1);
    }
}
