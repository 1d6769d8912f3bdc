//! One attempt's request for a region (rewritten for the replica, `Host` per
//! `proxy.host_header`).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Uri, Version};

use super::super::error::ProxyError;
use super::super::refusal::Refusal;
use super::super::{Dynamic, Proxy};
use crate::config::HostHeader;
use crate::proxy::metrics::ProxyMetrics;
use crate::region::Region;
use crate::upstream::body::BodyFailure;
use crate::upstream::client::RequestBody;

/// The parts of the request each attempt is built from.
pub(super) struct Template {
    pub(super) method: Method,
    pub(super) path_and_query: http::uri::PathAndQuery,
    pub(super) headers: HeaderMap,
    pub(super) original_host: Option<HeaderValue>,
}

impl Proxy {
    /// One attempt's request for `region`.
    pub(super) fn build(
        &self,
        metrics: &ProxyMetrics,
        d: &Dynamic,
        t: &Template,
        region: Region,
        body: RequestBody,
        count_misses: bool,
    ) -> Result<Request<RequestBody>, Refusal> {
        let up = &d.upstreams[region.index()];
        let mut headers = t.headers.clone();
        let mut path_and_query = t.path_and_query.clone();
        if region == Region::Replica && !d.rewriter.is_empty() {
            let r = d
                .rewriter
                .to_replica(t.path_and_query.as_str(), &mut headers);
            if count_misses {
                metrics.rewrite_misses(&r.misses);
            }
            if let Some(p) = r.path_and_query {
                path_and_query = p
                    .parse()
                    .map_err(|_| ProxyError::BadRequest("rewritten request target is invalid"))?;
            }
        }
        let host = match d.settings.host_header {
            HostHeader::Upstream => up.host.clone(),
            HostHeader::Preserve => t.original_host.clone().unwrap_or_else(|| up.host.clone()),
        };
        headers.insert(header::HOST, host);
        let uri = Uri::builder()
            .scheme(up.scheme.clone())
            .authority(up.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
        let mut req = Request::new(body);
        *req.method_mut() = t.method.clone();
        *req.uri_mut() = uri;
        // The upstream's version is the client's choice (h2 by config/ALPN).
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        Ok(req)
    }
}

pub(super) fn body_error(f: BodyFailure, limit: u64) -> ProxyError {
    match f {
        BodyFailure::TooLarge => ProxyError::BodyTooLarge { limit },
        BodyFailure::Idle => ProxyError::BodyTimeout,
        BodyFailure::Client => {
            ProxyError::BadRequest("the request body is malformed or was cut short")
        }
    }
}

/// The client's declared body length (hyper already refused conflicting ones).
pub(super) fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or(ProxyError::BadRequest("Content-Length is not a number")),
    }
}
