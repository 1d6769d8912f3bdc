//! A hook's `headers_file`: lines `Name: value` (blank lines and `#`
//! comments skipped), read at each delivery so a rotated token is picked
//! up. An error names the file and the line number, never the line.

use std::path::Path;

use http::{HeaderName, HeaderValue};

/// Why the headers file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HeadersError {
    #[error("cannot read headers_file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("headers_file {path}, line {line}: {what}")]
    Line {
        path: String,
        line: usize,
        what: &'static str,
    },
}

pub fn read(path: &Path) -> Result<Vec<(HeaderName, HeaderValue)>, HeadersError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| HeadersError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown)
}

fn parse(text: &str, path: &str) -> Result<Vec<(HeaderName, HeaderValue)>, HeadersError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what| HeadersError::Line {
            path: path.to_owned(),
            line: i + 1,
            what,
        };
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("expected \"Name: value\""))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| bad("the name is not a valid header name"))?;
        let mut value = HeaderValue::from_str(value.trim())
            .map_err(|_| bad("the value is not a valid header value"))?;
        // Kept out of any debug output hyper or failway might print.
        value.set_sensitive(true);
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_headers_and_a_bad_line_is_named_without_its_content() {
        let h = parse(
            "# token\n\nAuthorization: Bearer s3cret\nX-Team: payments\n",
            "f",
        )
        .unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].0, "authorization");
        assert_eq!(h[0].1, "Bearer s3cret");
        assert!(h[0].1.is_sensitive());
        let e = parse("X-Ok: 1\nBearer s3cret\n", "f")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "headers_file f, line 2: expected \"Name: value\"");
        assert!(!e.contains("s3cret"));
    }
}
