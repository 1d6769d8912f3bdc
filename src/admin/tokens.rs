//! `admin.tokens_file`: one named token a line (`NAME TOKEN`), so that each
//! operator or automation has its own token and the audit trail can say who
//! acted. The file is re-read when it changes; a token is compared in
//! constant time against every entry (no early exit on a match either) and
//! only the name ever leaves this module.
//!
//! Blank lines and lines starting with `#` are skipped. A malformed file is
//! an error naming the line, never showing it (it may hold a token).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::actions::constant_time_eq;
use crate::watched_file::Cached;

/// One entry of the file.
#[derive(Clone)]
struct Entry {
    name: String,
    token: Vec<u8>,
}

/// What is wrong with the tokens file.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    #[error("cannot read admin.tokens_file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("admin.tokens_file {path}, line {line}: {what}")]
    Line {
        path: PathBuf,
        line: usize,
        what: &'static str,
    },
    #[error("admin.tokens_file {path} holds no token")]
    Empty { path: PathBuf },
}

/// The named tokens of `admin.tokens_file`.
pub struct AdminTokens {
    file: Cached<Arc<Vec<Entry>>>,
}

impl AdminTokens {
    pub fn new(path: PathBuf) -> AdminTokens {
        AdminTokens {
            file: Cached::new(path),
        }
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Reads the file (again if it changed); also a start-up check.
    pub fn check(&self) -> Result<usize, TokensFileError> {
        self.entries().map(|e| e.len())
    }

    fn entries(&self) -> Result<Arc<Vec<Entry>>, TokensFileError> {
        self.file.get(|path| {
            let text = std::fs::read_to_string(path).map_err(|source| TokensFileError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            parse(&text, path).map(Arc::new)
        })
    }

    /// The name whose token `given` is; `None` when none matches or the
    /// file cannot be read (which then refuses everyone, logged by path).
    pub fn name_of(&self, given: &[u8]) -> Option<String> {
        let entries = match self.entries() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "refusing operator actions");
                return None;
            }
        };
        let mut found = None;
        for entry in entries.iter() {
            if constant_time_eq(given, &entry.token) && found.is_none() {
                found = Some(entry.name.clone());
            }
        }
        found
    }
}

fn parse(text: &str, path: &Path) -> Result<Vec<Entry>, TokensFileError> {
    let bad = |line: usize, what| TokensFileError::Line {
        path: path.to_path_buf(),
        line,
        what,
    };
    let mut entries: Vec<Entry> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(name), Some(token), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad(i + 1, "expected NAME TOKEN (two words)"));
        };
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            return Err(bad(
                i + 1,
                "the name may hold only letters, digits and - _ . @",
            ));
        }
        if entries.iter().any(|e| e.name == name) {
            return Err(bad(i + 1, "the name is already used on an earlier line"));
        }
        if entries.iter().any(|e| e.token == token.as_bytes()) {
            return Err(bad(i + 1, "the token is already given to another name"));
        }
        entries.push(Entry {
            name: name.to_owned(),
            token: token.as_bytes().to_vec(),
        });
    }
    if entries.is_empty() {
        return Err(TokensFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, AdminTokens) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).unwrap();
        (dir, AdminTokens::new(path))
    }

    #[test]
    fn each_token_gives_its_name_and_others_give_none() {
        let (_dir, tokens) = file("# operators\nalice s3cret-a\n\nci-deploy  s3cret-b\n");
        assert_eq!(tokens.check().unwrap(), 2);
        assert_eq!(tokens.name_of(b"s3cret-a").as_deref(), Some("alice"));
        assert_eq!(tokens.name_of(b"s3cret-b").as_deref(), Some("ci-deploy"));
        assert_eq!(tokens.name_of(b"s3cret-"), None);
        assert_eq!(tokens.name_of(b"alice"), None);
    }

    #[test]
    fn an_edited_file_is_read_again() {
        let (_dir, tokens) = file("alice old-token\n");
        assert_eq!(tokens.name_of(b"old-token").as_deref(), Some("alice"));
        // A different length, so the change shows even within one mtime tick.
        std::fs::write(tokens.path(), "alice new-token-2\nbob other\n").unwrap();
        assert_eq!(tokens.name_of(b"old-token"), None);
        assert_eq!(tokens.name_of(b"new-token-2").as_deref(), Some("alice"));
    }

    #[test]
    fn a_malformed_line_is_named_without_showing_the_token() {
        for (text, expected) in [
            ("alice\n", "line 1: expected NAME TOKEN"),
            ("alice tok extra-tok\n", "line 1: expected NAME TOKEN"),
            (
                "alice tok-1\nalice tok-2\n",
                "line 2: the name is already used",
            ),
            (
                "alice tok-1\nbob tok-1\n",
                "line 2: the token is already given",
            ),
            ("al/ice tok-1\n", "line 1: the name may hold only"),
            ("# nothing\n", "holds no token"),
        ] {
            let (_dir, tokens) = file(text);
            let message = tokens.check().unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?}: {message}");
            assert!(
                !message.contains("tok-") && !message.contains("extra-tok"),
                "{text:?}: {message}"
            );
        }
    }
}
