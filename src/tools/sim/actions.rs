//! Key actions, reached as `POST /api/v2/keys/{id}/actions/{name}` or the
//! legacy `POST /api/v2/keys/{id}?action={name}` (and `/restore`): the wrap
//! family, which only reads the store, and rotate, enable, disable and
//! restore, which change it (and so are replicated and refused by a
//! read-only region).
//!
//! Wrap without `plaintext` generates a 32-byte data encryption key and
//! returns it with its ciphertext. Unwrap of a ciphertext made under an older
//! key version also returns a fresh `ciphertext` under the current version
//! with `rewrappedKeyVersion`, as Key Protect does; rewrap always does.

use http::request::Parts;
use http::StatusCode;
use serde_json::{json, Value};

use super::api::{
    b64_decode, b64_encode, b64_field, json_body, json_response, no_content, wants_representation,
    Resp,
};
use super::crypto;
use super::error::ApiError;
use super::region::Region;
use super::render;

pub fn action(
    region: &Region,
    id: &str,
    name: &str,
    parts: &Parts,
    body: &[u8],
) -> Result<Resp, ApiError> {
    match name {
        "wrap" => wrap(region, id, body),
        "unwrap" => unwrap(region, id, body),
        "rewrap" => rewrap(region, id, body),
        "rotate" => {
            let payload = b64_field(&json_body(body)?, "payload")?;
            let key = region.write(|s, now| s.rotate(id, payload, now))?;
            if wants_representation(parts) {
                let value =
                    render::collection(render::KEY_TYPE, vec![render::key(region, &key, false)]);
                return Ok(json_response(StatusCode::OK, &value));
            }
            Ok(no_content())
        }
        "enable" | "disable" => {
            region.write(|s, now| s.set_enabled(id, name == "enable", now))?;
            Ok(no_content())
        }
        "restore" => {
            let key = region.write(|s, now| s.restore(id, now))?;
            let value =
                render::collection(render::KEY_TYPE, vec![render::key(region, &key, false)]);
            Ok(json_response(StatusCode::CREATED, &value))
        }
        "" => Err(ApiError::bad_request(
            "INVALID_QUERY_PARAM_ERR",
            "The 'action' query parameter is required",
        )),
        other => Err(ApiError::bad_request(
            "INVALID_QUERY_PARAM_ERR",
            format!("The action {other:?} is not supported"),
        )),
    }
}

/// The optional `aad` array of strings.
fn aad(doc: &Value) -> Result<Vec<String>, ApiError> {
    match doc.get("aad") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad_body("aad must be an array of strings")),
        Some(_) => Err(ApiError::bad_body("aad must be an array of strings")),
    }
}

/// The required, base64 `ciphertext`; undecodable text is unprocessable.
fn ciphertext(doc: &Value) -> Result<Vec<u8>, ApiError> {
    let text = doc
        .get("ciphertext")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_body("The body needs a 'ciphertext'"))?;
    b64_decode(text).map_err(|_| ApiError::bad_ciphertext())
}

fn wrap(region: &Region, id: &str, body: &[u8]) -> Result<Resp, ApiError> {
    let doc = json_body(body)?;
    let aad = aad(&doc)?;
    let given = b64_field(&doc, "plaintext")?.filter(|p| !p.is_empty());
    let (plaintext, generated) = match given {
        Some(p) => (p, false),
        None => {
            let dek = crypto::random_bytes(crypto::KEY_LEN)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            (dek, true)
        }
    };
    let (ct, version) = region.store().wrap(id, &plaintext, &aad)?;
    let mut value = json!({
        "ciphertext": b64_encode(&ct),
        "keyVersion": {"id": version},
    });
    if generated {
        value["plaintext"] = json!(b64_encode(&plaintext));
    }
    Ok(json_response(StatusCode::OK, &value))
}

fn unwrap(region: &Region, id: &str, body: &[u8]) -> Result<Resp, ApiError> {
    let doc = json_body(body)?;
    let (ct, aad) = (ciphertext(&doc)?, aad(&doc)?);
    let out = region.store().unwrap(id, &ct, &aad)?;
    let mut value = json!({
        "plaintext": b64_encode(&out.plaintext),
        "keyVersion": {"id": out.version},
    });
    if let Some((new_ct, new_version)) = out.rewrapped {
        value["ciphertext"] = json!(b64_encode(&new_ct));
        value["rewrappedKeyVersion"] = json!({"id": new_version});
    }
    Ok(json_response(StatusCode::OK, &value))
}

fn rewrap(region: &Region, id: &str, body: &[u8]) -> Result<Resp, ApiError> {
    let doc = json_body(body)?;
    let (ct, aad) = (ciphertext(&doc)?, aad(&doc)?);
    let store = region.store();
    let out = store.unwrap(id, &ct, &aad)?;
    let (new_ct, new_version) = match out.rewrapped {
        Some(r) => r,
        None => store.wrap(id, &out.plaintext, &aad)?,
    };
    let value = json!({
        "ciphertext": b64_encode(&new_ct),
        "keyVersion": {"id": new_version},
        "rewrappedKeyVersion": {"id": new_version},
    });
    Ok(json_response(StatusCode::OK, &value))
}
