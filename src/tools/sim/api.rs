//! The simulated Key Protect API (`/api/v2/keys...`): classification for the
//! counters, header checks, routing, and the key lifecycle handlers. The
//! wrap family and key actions live in `actions`.
//!
//! Header checks, in order: a missing `bluemix-instance` is 400
//! `BAD_HEADER_ERR`; a missing or wrong `Authorization: Bearer` is 401
//! `UNAUTHORIZED_ERR`; a `bluemix-instance` other than the one this region
//! serves is 401 too, as IAM answers a token without access to an instance.
//! A `--read-only` region then refuses every write with 409
//! `READ_ONLY_REGION_ERR` (a code the official clients do not retry).
//! Successes are `application/json` (the Python SDK parses only exactly
//! that). Paths are matched raw and case-sensitively; anything outside the
//! subset is 404 `NOT_FOUND_ERR`.

use crate::query::query_param;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use super::actions;
use super::error::ApiError;
use super::key::NewKey;
use super::region::{Class, Counters, Region};
use super::render;

pub type Resp = Response<Full<Bytes>>;

/// Key states listed when `state` is absent or empty (all but destroyed).
const DEFAULT_STATES: [u8; 4] = [0, 1, 2, 3];
const DEFAULT_LIMIT: usize = 200;
const MAX_LIMIT: usize = 5000;

/// The path segments after `/api/v2/keys`, or `None` for other paths.
fn key_segments(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix("/api/v2/keys")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Vec::new());
    }
    Some(rest.strip_prefix('/')?.split('/').collect())
}

fn is_wrap_action(name: &str) -> bool {
    matches!(name, "wrap" | "unwrap" | "rewrap")
}

/// How a request counts: wrap family, other reads (GET/HEAD), or write.
pub fn classify(parts: &Parts) -> Class {
    if parts.method == Method::GET || parts.method == Method::HEAD {
        return Class::Read;
    }
    let segs = key_segments(parts.uri.path()).unwrap_or_default();
    let action = match segs.as_slice() {
        [_, "actions", name] => Some((*name).to_owned()),
        [_] => query_param(parts.uri.query(), "action"),
        _ => None,
    };
    match action {
        Some(a) if parts.method == Method::POST && is_wrap_action(&a) => Class::Wrap,
        _ => Class::Write,
    }
}

fn check_headers(region: &Region, parts: &Parts) -> Result<(), ApiError> {
    let instance = parts
        .headers
        .get("bluemix-instance")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "BAD_HEADER_ERR",
                "The 'bluemix-instance' header is required",
            )
        })?;
    let auth = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = match auth.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            t.trim()
        }
        _ => return Err(ApiError::unauthorized()),
    };
    if region.token.as_deref().is_some_and(|want| want != token) {
        return Err(ApiError::unauthorized());
    }
    if !instance.eq_ignore_ascii_case(&region.instance) {
        return Err(ApiError::unauthorized());
    }
    Ok(())
}

/// Answers one API request whose body has been read.
pub fn handle(region: &Region, class: Class, parts: &Parts, body: &[u8]) -> Resp {
    let mut resp = answer(region, class, parts, body).unwrap_or_else(ApiError::into_response);
    if let Some(cid) = parts.headers.get("correlation-id") {
        resp.headers_mut().insert("correlation-id", cid.clone());
    }
    resp
}

fn answer(region: &Region, class: Class, parts: &Parts, body: &[u8]) -> Result<Resp, ApiError> {
    check_headers(region, parts)?;
    if class == Class::Write && region.read_only {
        Counters::bump(&region.counters.refused_read_only);
        return Err(ApiError::read_only());
    }
    let segs = key_segments(parts.uri.path()).ok_or_else(ApiError::route_not_found)?;
    let query = parts.uri.query();
    let m = &parts.method;
    match segs.as_slice() {
        [] if m == Method::GET || m == Method::HEAD => list(region, m, query),
        [] if m == Method::POST => create(region, parts, body),
        [id] if m == Method::GET => get(region, id, true),
        [id] if m == Method::DELETE => delete(region, id, parts),
        [id] if m == Method::POST => {
            let action = query_param(query, "action").unwrap_or_default();
            actions::action(region, id, &action, parts, body)
        }
        [id, "metadata"] if m == Method::GET => get(region, id, false),
        [id, "versions"] if m == Method::GET => versions(region, id, query),
        [id, "restore"] if m == Method::POST => actions::action(region, id, "restore", parts, body),
        [id, "actions", name] if m == Method::POST => {
            actions::action(region, id, name, parts, body)
        }
        [id, "aliases", alias] if m == Method::POST => {
            let key = region.write(|s, now| s.add_alias(id, alias, now))?;
            let value = render::collection(render::ALIAS_TYPE, vec![render::alias(&key, alias)]);
            Ok(json_response(StatusCode::CREATED, &value))
        }
        [id, "aliases", alias] if m == Method::DELETE => {
            region.write(|s, now| s.remove_alias(id, alias, now))?;
            Ok(no_content())
        }
        _ => Err(ApiError::route_not_found()),
    }
}

pub fn json_response(status: StatusCode, value: &Value) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn no_content() -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// Whether the client asked for `Prefer: return=representation`.
pub fn wants_representation(parts: &Parts) -> bool {
    parts
        .headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("return=representation"))
}

fn number(query: Option<&str>, name: &str, default: usize) -> Result<usize, ApiError> {
    match query_param(query, name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            ApiError::bad_request(
                "INVALID_QUERY_PARAM_ERR",
                format!("{name} must be a non-negative integer"),
            )
        }),
    }
}

fn list(region: &Region, method: &Method, query: Option<&str>) -> Result<Resp, ApiError> {
    let limit = number(query, "limit", DEFAULT_LIMIT)?.min(MAX_LIMIT);
    let offset = number(query, "offset", 0)?;
    let states = match query_param(query, "state").filter(|s| !s.is_empty()) {
        None => DEFAULT_STATES.to_vec(),
        Some(csv) => csv
            .split(',')
            .map(|s| s.trim().parse::<u8>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                ApiError::bad_request(
                    "INVALID_QUERY_PARAM_ERR",
                    "state is a comma-separated list of key state numbers",
                )
            })?,
    };
    let store = region.store();
    let (total, page) = store.list(&states, offset, limit);
    if method == Method::HEAD {
        let mut resp = Response::new(Full::new(Bytes::new()));
        resp.headers_mut()
            .insert("key-total", HeaderValue::from(total));
        return Ok(resp);
    }
    let resources = page
        .into_iter()
        .map(|k| render::key(region, k, false))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &render::collection(render::KEY_TYPE, resources),
    ))
}

/// `GET /keys/{id}` (`full`: refuses deleted keys, shows standard keys'
/// material) or `GET /keys/{id}/metadata` (shows deleted keys too).
fn get(region: &Region, id: &str, full: bool) -> Result<Resp, ApiError> {
    let store = region.store();
    let key = if full {
        store.live(id)?
    } else {
        store.find(id)?
    };
    let value = render::collection(render::KEY_TYPE, vec![render::key(region, key, full)]);
    Ok(json_response(StatusCode::OK, &value))
}

fn versions(region: &Region, id: &str, query: Option<&str>) -> Result<Resp, ApiError> {
    let limit = number(query, "limit", DEFAULT_LIMIT)?.min(MAX_LIMIT);
    let offset = number(query, "offset", 0)?;
    let store = region.store();
    let key = store.find(id)?;
    let page = render::versions(key)
        .into_iter()
        .skip(offset)
        .take(limit)
        .collect();
    let value = render::collection(render::VERSION_TYPE, page);
    Ok(json_response(StatusCode::OK, &value))
}

fn delete(region: &Region, id: &str, parts: &Parts) -> Result<Resp, ApiError> {
    let key = region.write(|s, now| s.delete(id, now))?;
    if wants_representation(parts) {
        let value = render::collection(render::KEY_TYPE, vec![render::key(region, &key, false)]);
        return Ok(json_response(StatusCode::OK, &value));
    }
    Ok(no_content())
}

/// Parses a JSON body; an empty body is `{}`.
pub fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_body(format!("Invalid JSON body: {e}")))
}

/// Key Protect's base64 (RFC 4648 §4: `+`, `/`, `=` padding) for key
/// material, plaintexts and ciphertexts.
pub fn b64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decodes [`b64_encode`]'s text. Padding is optional, as clients differ, but
/// when present it must be complete; anything outside the alphabet
/// (whitespace included) and non-zero trailing bits are rejected, so a
/// tampered ciphertext is not silently "repaired".
pub fn b64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    // The crate's engines either require canonical padding or forbid it;
    // `Indifferent` would also take partial padding such as "Zg=".
    if text.ends_with('=') {
        STANDARD.decode(text)
    } else {
        STANDARD_NO_PAD.decode(text)
    }
}

/// A string field that must be base64 when present.
pub fn b64_field(obj: &Value, name: &str) -> Result<Option<Vec<u8>>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => b64_decode(s).map(Some).map_err(|_| {
            ApiError::bad_request("INVALID_FIELD_ERR", format!("{name} must be base64"))
        }),
        Some(_) => Err(ApiError::bad_body(format!("{name} must be a string"))),
    }
}

fn create(region: &Region, parts: &Parts, body: &[u8]) -> Result<Resp, ApiError> {
    let doc = json_body(body)?;
    let resources = doc
        .get("resources")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_body("The body needs a 'resources' array"))?;
    if let Some(total) = doc.pointer("/metadata/collectionTotal") {
        if total.as_u64() != Some(resources.len() as u64) {
            return Err(ApiError::bad_request(
                "COLLECTION_TOTAL_MISMATCH_ERR",
                "Collection total does not match number of resources",
            ));
        }
    }
    let [res] = resources.as_slice() else {
        return Err(ApiError::bad_body("Exactly one key resource is required"));
    };
    let name = res
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_body("A key needs a 'name'"))?;
    let aliases = match res.get("aliases") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad_body("aliases must be strings"))?,
        Some(_) => return Err(ApiError::bad_body("aliases must be an array")),
    };
    let spec = NewKey {
        name: name.to_owned(),
        description: res
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        // Key Protect's default: a standard key unless asked otherwise.
        extractable: res
            .get("extractable")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        payload: b64_field(res, "payload")?,
        aliases,
    };
    let key = region.write(|s, now| s.create(spec, now))?;
    let full = wants_representation(parts);
    let value = render::collection(render::KEY_TYPE, vec![render::key(region, &key, full)]);
    Ok(json_response(StatusCode::CREATED, &value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str) -> Parts {
        let (p, _) = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts();
        p
    }

    #[test]
    fn classification_matches_key_protect() {
        let c = |m, u| classify(&parts(m, u));
        assert_eq!(c("GET", "/api/v2/keys"), Class::Read);
        assert_eq!(c("HEAD", "/api/v2/keys"), Class::Read);
        assert_eq!(c("POST", "/api/v2/keys/k/actions/wrap"), Class::Wrap);
        assert_eq!(c("POST", "/api/v2/keys/k?action=unwrap"), Class::Wrap);
        assert_eq!(c("POST", "/api/v2/keys/k/actions/rotate"), Class::Write);
        assert_eq!(c("POST", "/api/v2/keys/k?action=rotate"), Class::Write);
        assert_eq!(c("POST", "/api/v2/keys"), Class::Write);
        assert_eq!(c("DELETE", "/api/v2/keys/k"), Class::Write);
        assert_eq!(c("POST", "/api/v2/keys/k/actions/Wrap"), Class::Write);
    }

    #[test]
    fn paths_and_queries() {
        assert_eq!(key_segments("/api/v2/keys"), Some(vec![]));
        assert_eq!(key_segments("/api/v2/keys/"), Some(vec![]));
        assert_eq!(
            key_segments("/api/v2/keys/a/metadata"),
            Some(vec!["a", "metadata"])
        );
        assert_eq!(key_segments("/api/v2/keysx"), None);
    }

    #[test]
    fn base64_rfc4648_vectors_round_trip() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(b64_encode(plain.as_bytes()), enc);
            assert_eq!(b64_decode(enc).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn base64_all_byte_values_round_trip_and_padding_is_optional() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..data.len() {
            let enc = b64_encode(&data[..len]);
            assert_eq!(b64_decode(&enc).unwrap(), &data[..len]);
            assert_eq!(b64_decode(enc.trim_end_matches('=')).unwrap(), &data[..len]);
        }
        assert_eq!(b64_encode(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn base64_rejects_garbage() {
        for bad in [
            "Zm9v!A",
            "Zm 9vA==",
            "Zm9v\n",
            "Z",
            "Zm=v",
            // Non-zero trailing bits: "Zh==" would decode to "f" too.
            "Zh==",
            "Zh",
            "====",
            "=",
            // Padding, when present, is complete.
            "Zg=",
            "Zm9vYg=",
            "Zm9v=",
            "Zm9vYmE==",
            "Zm8=Zm8=",
            // No URL-safe alphabet.
            "-_8=",
        ] {
            assert!(b64_decode(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
