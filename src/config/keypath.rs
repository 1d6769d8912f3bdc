//! Finds the key path (`proxy.tls.cert`, `rewrite[2].primary`) at a byte
//! offset of a TOML document, so that an error the deserializer reports with
//! only a span (an unknown key, a value of the wrong type) can name its key
//! like every other config error does.
//!
//! This is a scanner, not a parser: it is only run on text that already parsed
//! as TOML, and it tracks just enough (table headers, arrays of tables, dotted
//! keys, inline tables, arrays, strings) to know which key a position belongs
//! to. It never decides whether a document is valid.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// The key path at byte `offset` of `text` (a valid TOML document), as its
/// segments (keys and array indexes), or `None` when the offset is on no key
/// or value.
pub(super) fn key_segments_at(text: &str, offset: usize) -> Option<Vec<Seg>> {
    let mut scanner = Scanner {
        s: text.as_bytes(),
        text,
        i: 0,
        target: offset,
        arrays: HashMap::new(),
    };
    scanner.document()
}

/// Formats segments as `a.b[2]."quoted key"`.
pub(super) fn path_of(segs: &[Seg]) -> String {
    format_path(segs)
}

/// Formats segments as `a.b[2]."quoted key"`.
fn format_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if !k.is_empty() && k.bytes().all(is_bare) {
                    out.push_str(k);
                } else {
                    out.push_str(&format!("{k:?}"));
                }
            }
        }
    }
    out
}

fn is_bare(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

struct Scanner<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    target: usize,
    /// Arrays of tables seen so far (resolved path -> index of the last element).
    arrays: HashMap<Vec<Seg>, usize>,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at(&self, start: usize) -> bool {
        (start..self.i).contains(&self.target)
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// Skips whitespace, newlines and comments.
    fn skip_blank(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.i += 1,
                Some(b'#') => {
                    while !matches!(self.peek(), None | Some(b'\n')) {
                        self.i += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn document(&mut self) -> Option<Vec<Seg>> {
        let mut table: Vec<Seg> = Vec::new();
        loop {
            self.skip_blank();
            let start = self.i;
            match self.peek() {
                None => return None,
                Some(b'[') => {
                    let double = self.s.get(self.i + 1) == Some(&b'[');
                    self.i += if double { 2 } else { 1 };
                    self.skip_spaces();
                    let keys = self.key()?;
                    self.skip_spaces();
                    self.i += if double { 2 } else { 1 };
                    table = self.resolve_header(keys, double);
                    if self.at(start) {
                        return Some(table);
                    }
                }
                Some(_) => {
                    if let Some(found) = self.keyval(&table) {
                        return Some(found);
                    }
                    if self.i == start {
                        // Not TOML after all; give up rather than loop.
                        return None;
                    }
                }
            }
        }
    }

    /// Resolves a table header's keys against the arrays of tables seen so far:
    /// `[[a.b]]` inside `[[a]]` belongs to the last `a` element.
    fn resolve_header(&mut self, keys: Vec<String>, double: bool) -> Vec<Seg> {
        let mut path = Vec::new();
        let n = keys.len();
        for (k, key) in keys.into_iter().enumerate() {
            path.push(Seg::Key(key));
            if double && k + 1 == n {
                let index = self.arrays.get(&path).map_or(0, |i| i + 1);
                self.arrays.insert(path.clone(), index);
                path.push(Seg::Index(index));
            } else if let Some(&index) = self.arrays.get(&path) {
                path.push(Seg::Index(index));
            }
        }
        path
    }

    /// `key = value`; returns the path if the target lies on it.
    fn keyval(&mut self, prefix: &[Seg]) -> Option<Vec<Seg>> {
        let start = self.i;
        let keys = self.key()?;
        let mut path = prefix.to_vec();
        path.extend(keys.into_iter().map(Seg::Key));
        if self.at(start) {
            return Some(path);
        }
        self.skip_spaces();
        if self.peek() != Some(b'=') {
            return None;
        }
        self.i += 1;
        self.skip_spaces();
        self.value(&path)
    }

    /// A dotted key; `None` when there is none here.
    fn key(&mut self) -> Option<Vec<String>> {
        let mut keys = Vec::new();
        loop {
            self.skip_spaces();
            let start = self.i;
            match self.peek()? {
                q @ (b'"' | b'\'') => {
                    self.string();
                    let inner = self.text.get(start + 1..self.i.saturating_sub(1))?;
                    let key = if q == b'"' {
                        inner.replace("\\\"", "\"").replace("\\\\", "\\")
                    } else {
                        inner.to_owned()
                    };
                    keys.push(key);
                }
                _ => {
                    while self.peek().is_some_and(is_bare) {
                        self.i += 1;
                    }
                    if self.i == start {
                        return None;
                    }
                    keys.push(self.text.get(start..self.i)?.to_owned());
                }
            }
            self.skip_spaces();
            if self.peek() == Some(b'.') {
                self.i += 1;
            } else {
                return Some(keys);
            }
        }
    }

    /// Skips a string of any of the four kinds.
    fn string(&mut self) {
        let Some(quote) = self.peek() else { return };
        let triple = self.s.get(self.i..self.i + 3) == Some(&[quote; 3][..]);
        if triple {
            self.i += 3;
            loop {
                match self.peek() {
                    None => return,
                    Some(b'\\') if quote == b'"' => self.i += 2,
                    Some(c)
                        if c == quote
                            && self.s.get(self.i..self.i + 3) == Some(&[quote; 3][..]) =>
                    {
                        self.i += 3;
                        // Up to two quotes may directly precede the closing three.
                        let mut extra = 0;
                        while extra < 2 && self.peek() == Some(quote) {
                            self.i += 1;
                            extra += 1;
                        }
                        return;
                    }
                    Some(_) => self.i += 1,
                }
            }
        }
        self.i += 1;
        loop {
            match self.peek() {
                None | Some(b'\n') => return,
                Some(b'\\') if quote == b'"' => self.i += 2,
                Some(c) if c == quote => {
                    self.i += 1;
                    return;
                }
                Some(_) => self.i += 1,
            }
        }
    }

    /// Skips a value; returns the deepest path on which the target lies.
    fn value(&mut self, path: &[Seg]) -> Option<Vec<Seg>> {
        let start = self.i;
        match self.peek()? {
            b'"' | b'\'' => self.string(),
            b'[' => {
                self.i += 1;
                let mut index = 0;
                loop {
                    self.skip_blank();
                    match self.peek() {
                        None => break,
                        Some(b']') => {
                            self.i += 1;
                            break;
                        }
                        Some(b',') => {
                            self.i += 1;
                            index += 1;
                        }
                        Some(_) => {
                            let mut item = path.to_vec();
                            item.push(Seg::Index(index));
                            let before = self.i;
                            if let Some(found) = self.value(&item) {
                                return Some(found);
                            }
                            if self.i == before {
                                return None;
                            }
                        }
                    }
                }
            }
            b'{' => {
                self.i += 1;
                loop {
                    self.skip_blank();
                    match self.peek() {
                        None => break,
                        Some(b'}') => {
                            self.i += 1;
                            break;
                        }
                        Some(b',') => self.i += 1,
                        Some(_) => {
                            let before = self.i;
                            if let Some(found) = self.keyval(path) {
                                return Some(found);
                            }
                            if self.i == before {
                                return None;
                            }
                        }
                    }
                }
            }
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b']' | b'}' | b'\n' | b'\r' | b'#')
                ) {
                    self.i += 1;
                }
            }
        }
        if self.at(start) {
            Some(path.to_vec())
        } else {
            None
        }
    }
}
