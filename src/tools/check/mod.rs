//! `failway check`: loads what `failway run` will load, without binding a
//! port or writing a file. The values first (every error of the file in
//! one run); then, unless `--offline`, every file the config names
//! ([`files`]): tokens readable and non-empty, certificates and keys
//! parsed (expiry printed), the state folder writable, endpoint lists
//! well-formed. All problems are printed in one run, each naming its key;
//! any problem exits 64.
//!
//! `--offline` is for shipped configs and CI jobs that validate a config
//! away from the machine it will run on.

pub mod files;

use std::path::Path;

use crate::config::{Config, ConfigError};

/// EX_USAGE: the configuration (the input) is wrong.
pub const EXIT_CONFIG: u8 = 64;

/// Checks the config file at `path`; prints the effective config on stdout
/// and findings on stderr. Returns the exit code.
pub fn run(path: &Path, offline: bool) -> u8 {
    let cfg = match Config::load(path) {
        Ok(cfg) => cfg,
        Err(errors) => {
            print_errors(path, errors.iter());
            return EXIT_CONFIG;
        }
    };
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    let problems = if offline {
        Vec::new()
    } else {
        check_files(&cfg)
    };
    if !problems.is_empty() {
        print_errors(path, problems.iter());
        return EXIT_CONFIG;
    }
    print!("{}", cfg.to_effective_toml());
    0
}

/// Checks every file `cfg` names; prints what is fine (with its note) and
/// returns the problems.
pub fn check_files(cfg: &Config) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    for file in files::named_files(cfg) {
        match files::check(&file) {
            Ok(Some(note)) => eprintln!("ok: {}: {}: {note}", file.key, file.path.display()),
            Ok(None) => eprintln!("ok: {}: {}", file.key, file.path.display()),
            Err(e) => problems.push(e),
        }
    }
    problems
}

fn print_errors<'a>(path: &Path, errors: impl ExactSizeIterator<Item = &'a ConfigError>) {
    eprintln!("{}: {} error(s):", path.display(), errors.len());
    for e in errors {
        eprintln!("  {e}");
    }
}
