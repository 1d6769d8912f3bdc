//! The operator console: `GET /` on the admin listener (with the operator
//! actions) and on `admin.probe_listen` (read-only: no form, no button),
//! and `GET /events`, the live stream the page follows (`events`).
//!
//! Everything is embedded in the binary (`page.html`, `actions.html`,
//! `console.css`, `console.js`): no CDN, font or external script, so the
//! page works on an air-gapped cluster and behind `kubectl port-forward`.
//! Scripts and styles are separate resources served under a
//! `Content-Security-Policy` of `'self'` without `unsafe-inline`, so an
//! injected string can never run. The HTML is rendered on the server
//! (`render`), so the state shows without JavaScript; the script adds the
//! live updates, the countdown and the actions.
//!
//! The actions themselves are the JSON API of `/admin/*` and its guard: the
//! page sends `Content-Type: application/json`, its own `Origin`, and the
//! token (kept in a script variable only) as `Authorization: Bearer`. No
//! cookie is ever set or read, so a cross-site request carries nothing.

pub mod events;
mod rates;
pub mod render;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use super::{AdminState, Listener};

const PAGE: &str = include_str!("page.html");
const ACTIONS: &str = include_str!("actions.html");
const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// The policy of every console resource: only its own scripts, styles and
/// connections; no frames, no plugins, no inline code.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How long the console waits for etcd's list of fleet instances before
/// rendering without it.
const FLEET_WAIT: Duration = Duration::from_millis(500);

/// Per-state console: the open `/events` streams.
#[derive(Default)]
pub struct Console {
    pub streams: events::Streams,
    rates: rates::Rates,
}

/// The headers every console answer carries.
pub fn harden<B>(r: &mut Response<B>) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn resource(content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    harden(&mut r);
    r
}

/// `/console.css` and `/console.js`; `None` for any other path.
pub fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    match path {
        "/console.css" => Some(resource("text/css; charset=utf-8", CSS.to_owned())),
        "/console.js" => Some(resource("text/javascript; charset=utf-8", JS.to_owned())),
        _ => None,
    }
}

#[cfg(test)]
/// The bytes of everything the page loads: HTML skeleton and actions,
/// stylesheet and script (the rendered state comes on top).
pub fn embedded_size() -> usize {
    PAGE.len() + ACTIONS.len() + CSS.len() + JS.len()
}

/// `/status` with each service's blocked writes and retries per minute
/// and, in fleet mode, its instances as etcd lists them (left out when
/// etcd does not answer in time).
pub async fn document(state: &AdminState) -> Value {
    let routes = state.proxy.routes();
    let mut doc = super::status::document(&routes);
    for svc in routes.services() {
        doc["services"][svc.name()]["traffic"] =
            state.console.rates.observe(svc.name(), svc.registry());
        let Some(fleet) = svc.failover().fleet() else {
            continue;
        };
        if let Ok(Ok(list)) = tokio::time::timeout(FLEET_WAIT, fleet.instances()).await {
            doc["services"][svc.name()]["fleet_instances"] =
                serde_json::to_value(list).unwrap_or_default();
        }
    }
    doc
}

/// `GET /`: the whole page, the actions on the admin listener only.
pub async fn page(state: &AdminState, listener: Listener) -> Response<Full<Bytes>> {
    let doc = document(state).await;
    let live = render::services(&doc, SystemTime::now());
    let actions = match listener {
        Listener::Admin => actions_form(&doc, state.has_token()),
        Listener::Probe => String::new(),
    };
    let html = PAGE
        .replace("{{listener}}", listener_name(listener))
        .replace("{{actions}}", &actions)
        .replace("{{live}}", &live);
    let mut r = resource("text/html; charset=utf-8", html);
    *r.status_mut() = StatusCode::OK;
    r
}

fn listener_name(listener: Listener) -> &'static str {
    match listener {
        Listener::Admin => "admin",
        Listener::Probe => "probe",
    }
}

fn actions_form(doc: &Value, token: bool) -> String {
    let options: String = doc["services"]
        .as_object()
        .map(|m| {
            m.keys()
                .map(|n| format!("<option>{}</option>", render::esc(n)))
                .collect()
        })
        .unwrap_or_default();
    let token_field = if token {
        "<label>Admin token <input type=\"password\" id=\"token\" autocomplete=\"off\" spellcheck=\"false\" placeholder=\"not set\"></label>"
    } else {
        ""
    };
    ACTIONS
        .replace("{{services}}", &options)
        .replace("{{token}}", token_field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_a_few_tens_of_kib() {
        assert!(embedded_size() < 40 * 1024, "{}", embedded_size());
    }

    #[test]
    fn the_policy_allows_no_inline_code() {
        assert!(!CSP.contains("unsafe"));
        assert!(!PAGE.contains("<script>") && !PAGE.contains("style="));
        assert!(!ACTIONS.contains("<script>") && !ACTIONS.contains("style="));
    }
}
