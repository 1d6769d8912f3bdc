//! `[[hooks]]`: each entry's URL (http or https, any path: chat relays put
//! their secret there), the events it takes, its headers file, timeout and
//! attempt cap.

use http::Uri;

use super::super::raw::RawHook;
use super::super::{HookConfig, HookEvent};
use super::{secs, Validator};

impl Validator<'_> {
    pub(super) fn hooks(&mut self, entries: Vec<RawHook>) -> Vec<HookConfig> {
        let mut out = Vec::new();
        for (i, r) in entries.into_iter().enumerate() {
            let at = format!("hooks[{i}]");
            let before = self.errors.len();
            let url = self.hook_url(&format!("{at}.url"), r.url);
            let events = self.hook_events(&format!("{at}.events"), r.events);
            let headers_file = self.file(&format!("{at}.headers_file"), r.headers_file);
            let timeout = self.duration(&format!("{at}.timeout"), r.timeout, secs(5));
            if self.ok(&format!("{at}.timeout")) && timeout.is_zero() {
                self.err(format!("{at}.timeout"), "must be more than 0s");
            }
            let max_attempts = self.int(
                &format!("{at}.max_attempts"),
                r.max_attempts,
                5,
                1,
                Some(100),
            );
            if let (Some(url), true) = (url, self.errors.len() == before) {
                out.push(HookConfig {
                    url,
                    events,
                    headers_file,
                    timeout,
                    max_attempts,
                });
            }
        }
        out
    }

    fn hook_url(&mut self, path: &str, raw: Option<String>) -> Option<Uri> {
        let Some(s) = raw else {
            self.err(
                path,
                "required (e.g. \"https://alerts.example.com/failway\")",
            );
            return None;
        };
        // The URL is never quoted back: its path or query may be a secret.
        let uri = match s.parse::<Uri>() {
            Ok(u) => u,
            Err(_) => {
                self.err(
                    path,
                    "is not a URL (e.g. \"https://alerts.example.com/failway\")",
                );
                return None;
            }
        };
        let problem = match (uri.scheme_str(), uri.authority()) {
            (None, _) | (_, None) => Some("needs a scheme and a host".to_owned()),
            (Some(scheme), _)
                if !scheme.eq_ignore_ascii_case("http")
                    && !scheme.eq_ignore_ascii_case("https") =>
            {
                Some(format!(
                    "has scheme {scheme:?}; only http and https are supported"
                ))
            }
            (_, Some(a)) if a.as_str().contains('@') => Some(
                "must not contain user info (user:password@); put credentials in headers_file"
                    .to_owned(),
            ),
            (_, Some(a)) if a.host().is_empty() => Some("has no host".to_owned()),
            _ if s.contains('#') => Some("must not have a fragment".to_owned()),
            _ => None,
        };
        match problem {
            Some(p) => {
                self.err(path, p);
                None
            }
            None => Some(uri),
        }
    }

    fn hook_events(&mut self, path: &str, raw: Option<Vec<String>>) -> Vec<HookEvent> {
        let Some(names) = raw else {
            return HookEvent::ALL.to_vec();
        };
        if names.is_empty() {
            self.err(
                path,
                "must name at least one event; omit it for all of them",
            );
        }
        let mut out = Vec::new();
        for name in names {
            match HookEvent::ALL.iter().find(|e| e.as_str() == name) {
                Some(e) if !out.contains(e) => out.push(*e),
                Some(_) => self.err(path, format!("{name:?} is listed twice")),
                None => {
                    let known: Vec<&str> = HookEvent::ALL.iter().map(|e| e.as_str()).collect();
                    self.err(
                        path,
                        format!("{name:?} is not an event; use {}", known.join(", ")),
                    );
                }
            }
        }
        out
    }
}
