//! Errors the simulated API answers with, in Key Protect's error format.
//!
//! The body is `application/vnd.ibm.kms.error+json`: `metadata`,
//! `resources[0].errorMsg` (read by the Go client and redstone) and
//! `reasons[]` with `code`, `message`, `status`, `moreInfo`, plus a top-level
//! `message`, the field the Python SDK 3.x shows. Codes are Key Protect's
//! documented ones where one exists; `BAD_HEADER_ERR`, `READ_ONLY_REGION_ERR`,
//! `NOT_FOUND_ERR` and `SERVICE_UNAVAILABLE_ERR` are the simulator's own.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use thiserror::Error;

pub const ERROR_CONTENT_TYPE: &str = "application/vnd.ibm.kms.error+json";
const MORE_INFO: &str = "https://cloud.ibm.com/apidocs/key-protect";

/// One failed request: its status, reason code and explanation.
#[derive(Debug, Clone, Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    /// What failed, in the generic words of `errorMsg`.
    pub summary: &'static str,
    /// The specific reason, shown as `reasons[0].message` and `message`.
    pub message: String,
    /// Seconds for `Retry-After` (503 only).
    pub retry_after: Option<u64>,
}

const KEY_ACTION: &str = "Action could not be performed on key";

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        summary: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            summary,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            code,
            "The request could not be processed",
            message,
        )
    }

    pub fn bad_body(message: impl Into<String>) -> Self {
        Self::bad_request("BAD_BODY_ERR", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED_ERR",
            "The user does not have access to the specified resource",
            "The user does not have access to the specified resource",
        )
    }

    pub fn key_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "KEY_NOT_FOUND_ERR",
            "Key could not be found",
            "Key does not exist",
        )
    }

    pub fn key_deleted() -> Self {
        Self::new(
            StatusCode::GONE,
            "KEY_DELETED_ERR",
            KEY_ACTION,
            "Key has already been deleted. Please delete references to this key",
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, KEY_ACTION, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, KEY_ACTION, message)
    }

    pub fn bad_ciphertext() -> Self {
        Self::unprocessable(
            "UNPROCESSABLE_CIPHERTEXT_ERR",
            "The provided ciphertext is invalid or corrupted",
        )
    }

    pub fn read_only() -> Self {
        Self::conflict(
            "READ_ONLY_REGION_ERR",
            "This region is a read-only replica: writes are refused",
        )
    }

    pub fn unavailable(retry_after: Option<u64>) -> Self {
        ApiError {
            retry_after,
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE_ERR",
                "The service is temporarily unavailable",
                "The service is temporarily unavailable (simulated fault)",
            )
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERR",
            "Internal server error",
            message,
        )
    }

    pub fn route_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND_ERR",
            "The requested resource could not be found",
            "This path is not part of the simulated API",
        )
    }

    /// The error body as JSON.
    pub fn body(&self) -> serde_json::Value {
        let reason = self.status.canonical_reason().unwrap_or("Error");
        serde_json::json!({
            "metadata": {"collectionType": ERROR_CONTENT_TYPE, "collectionTotal": 1},
            "resources": [{
                "errorMsg": format!(
                    "{reason}: {}. Please see reasons for more details.",
                    self.summary
                ),
                "reasons": [{
                    "code": self.code,
                    "message": self.message,
                    "status": self.status.as_u16(),
                    "moreInfo": MORE_INFO,
                }],
            }],
            "message": self.message,
        })
    }

    /// The full response.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(Bytes::from(self.body().to_string())));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(ERROR_CONTENT_TYPE),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_key_protect_shape() {
        let b = ApiError::key_not_found().body();
        assert_eq!(b["metadata"]["collectionType"], ERROR_CONTENT_TYPE);
        assert_eq!(b["metadata"]["collectionTotal"], 1);
        let r = &b["resources"][0];
        assert!(r["errorMsg"].as_str().unwrap().starts_with("Not Found: "));
        assert_eq!(r["reasons"][0]["code"], "KEY_NOT_FOUND_ERR");
        assert_eq!(r["reasons"][0]["status"], 404);
        assert_eq!(b["message"], r["reasons"][0]["message"]);
    }

    #[test]
    fn unavailable_carries_retry_after() {
        let resp = ApiError::unavailable(Some(3)).into_response();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
        let resp = ApiError::unavailable(None).into_response();
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    }
}
