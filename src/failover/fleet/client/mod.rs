//! etcd's v3 API through the JSON gateway every etcd serves on its client
//! URLs (`/v3/kv/range`, `/v3/kv/txn`, `/v3/lease/*`, `/v3/watch`), over
//! hyper and rustls: the same HTTP client and TLS setup as the upstreams, and
//! no code generated at build time (etcd's gRPC API would need `protoc`).
//!
//! The gateway speaks JSON with the proto field names: 64-bit integers as
//! strings, bytes (keys and values) as base64, fields at their default value
//! left out. A watch is one long POST whose response streams one JSON object
//! per line (`{"result": ...}` or `{"error": ...}`).
//!
//! With `fleet.username`, failway authenticates (`/v3/auth/authenticate`,
//! the password read from `fleet.password_file` each time, so a rotated
//! Secret is followed) and sends the token as `Authorization`; a token etcd
//! no longer accepts is replaced once per request. Endpoints are tried in
//! turn: a transport failure moves to the next one (and re-reads
//! `fleet.endpoints_file`).
//!
//! What it deliberately does not do: decide anything, or retry; the tasks in
//! `tasks.rs` do that with backoff.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

mod endpoints;
pub(crate) use endpoints::parse_endpoints;
mod stream;

use self::endpoints::{check_endpoints, read_endpoints};
pub(super) use self::stream::WatchStream;
use self::stream::{read_all, Lines};
use super::FleetError;
use crate::config::FleetConfig;

/// Idle connections to etcd kept open; the watch holds one more.
const MAX_IDLE: usize = 4;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest JSON answer or watch line taken from etcd; failway's records are
/// a few KiB.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Why a request to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("cannot reach etcd at {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("etcd at {endpoint} broke off its answer")]
    Body {
        endpoint: String,
        #[source]
        source: hyper::Error,
    },
    /// etcd answered with an error (`message` is etcd's own text).
    #[error("etcd at {endpoint} answered {status}: {message}")]
    Status {
        endpoint: String,
        status: StatusCode,
        message: String,
    },
    #[error("etcd at {endpoint} sent an answer failway cannot read ({what})")]
    Decode {
        endpoint: String,
        what: &'static str,
    },
    #[error("fleet.password_file: cannot read {path}: {source}")]
    PasswordFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("fleet.endpoints_file: {0}")]
    EndpointsFile(String),
}

impl EtcdError {
    /// Whether the next request should go to another endpoint.
    fn is_transport(&self) -> bool {
        matches!(
            self,
            EtcdError::Connect { .. } | EtcdError::Body { .. } | EtcdError::Decode { .. }
        ) || matches!(self, EtcdError::Status { status, .. } if status.is_server_error())
    }
}

/// One key as etcd returns it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct Kv {
    #[serde(deserialize_with = "b64")]
    pub key: Vec<u8>,
    #[serde(deserialize_with = "b64")]
    pub value: Vec<u8>,
    #[serde(deserialize_with = "int")]
    pub create_revision: i64,
    #[serde(deserialize_with = "int")]
    pub mod_revision: i64,
    #[serde(deserialize_with = "int")]
    pub lease: i64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
struct Header {
    #[serde(deserialize_with = "int")]
    revision: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RangeBody {
    header: Header,
    kvs: Vec<Kv>,
}

/// Keys read at one revision.
#[derive(Debug)]
pub(super) struct Range {
    pub revision: i64,
    pub kvs: Vec<Kv>,
}

/// What a compare-and-swap compares before it puts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Expect {
    /// The key must not exist.
    Absent,
    /// The key must exist with this mod revision.
    ModRevision(i64),
}

/// The answer to a compare-and-swap: on failure, the key as it is.
#[derive(Debug)]
pub(super) struct Swap {
    pub revision: i64,
    pub succeeded: bool,
    pub current: Option<Kv>,
}

/// A lease etcd granted or renewed.
#[derive(Debug, Clone, Copy)]
pub(super) struct LeaseGrant {
    pub id: i64,
    /// Seconds etcd keeps it; 0 or less: etcd no longer knows the lease.
    pub ttl: i64,
}

/// One message of a watch.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub kv: Option<Kv>,
}

impl WatchEvent {
    pub fn is_delete(&self) -> bool {
        self.kind == "DELETE"
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct WatchMessage {
    pub created: bool,
    pub canceled: bool,
    pub events: Vec<WatchEvent>,
}

type Https = HttpsConnector<HttpConnector>;

/// A client for one etcd cluster; cheap to share behind an `Arc`.
pub(super) struct Etcd {
    http: Client<Https, Full<Bytes>>,
    endpoints: Mutex<Endpoints>,
    endpoints_file: Option<PathBuf>,
    credentials: Option<(String, PathBuf)>,
    token: Mutex<Option<HeaderValue>>,
    /// Bound on each request (the answer's head and body; a watch's head).
    op_timeout: Duration,
}

struct Endpoints {
    list: Vec<Uri>,
    current: usize,
}

impl Etcd {
    /// Sets up the client; reaches no etcd yet.
    pub fn new(cfg: &FleetConfig, op_timeout: Duration) -> Result<Etcd, FleetError> {
        let list = match &cfg.endpoints_file {
            Some(path) => read_endpoints(path)?,
            None => cfg.endpoints.clone(),
        };
        let key = match cfg.endpoints_file {
            Some(_) => "fleet.endpoints_file",
            None => "fleet.endpoints",
        };
        check_endpoints(&list, key)?;
        let builder = crate::upstream::client::https_builder("fleet", cfg.tls.as_ref())
            .map_err(FleetError::Client)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(op_timeout));
        let connector = builder.enable_http1().wrap_connector(http);
        let http = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE)
            .build(connector);
        Ok(Etcd {
            http,
            endpoints: Mutex::new(Endpoints { list, current: 0 }),
            endpoints_file: cfg.endpoints_file.clone(),
            credentials: cfg.username.clone().zip(cfg.password_file.clone()),
            token: Mutex::new(None),
            op_timeout,
        })
    }

    /// The keys `key` names (with `prefix`, every key starting with it).
    pub async fn range(&self, key: &str, prefix: bool) -> Result<Range, FleetError> {
        let mut body = json!({ "key": B64.encode(key) });
        if prefix {
            body["range_end"] = Value::String(B64.encode(prefix_end(key.as_bytes())));
        }
        let got: RangeBody = self.call("read", "/v3/kv/range", body).await?;
        Ok(Range {
            revision: got.header.revision,
            kvs: got.kvs,
        })
    }

    /// Puts `value` at `key`, tied to `lease` when one is given.
    pub async fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<(), FleetError> {
        let mut body = json!({ "key": B64.encode(key), "value": B64.encode(value) });
        if let Some(lease) = lease {
            body["lease"] = Value::String(lease.to_string());
        }
        self.call::<Value>("put", "/v3/kv/put", body)
            .await
            .map(drop)
    }

    /// Puts `value` at `key` if, and only if, `expect` holds, in one
    /// transaction; when it does not, reads the key in the same transaction.
    pub async fn compare_and_put(
        &self,
        key: &str,
        expect: Expect,
        value: &[u8],
    ) -> Result<Swap, FleetError> {
        let k = B64.encode(key);
        let compare = match expect {
            Expect::Absent => json!([
                { "key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0" }
            ]),
            // An absent key compares as mod revision 0: require presence too.
            Expect::ModRevision(rev) => json!([
                { "key": k, "target": "CREATE", "result": "GREATER", "create_revision": "0" },
                { "key": k, "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string() }
            ]),
        };
        let body = json!({
            "compare": compare,
            "success": [{ "request_put": { "key": k, "value": B64.encode(value) } }],
            "failure": [{ "request_range": { "key": k } }],
        });

        #[derive(Default, Deserialize)]
        #[serde(default)]
        struct TxnBody {
            header: Header,
            succeeded: bool,
            responses: Vec<OpBody>,
        }
        #[derive(Default, Deserialize)]
        #[serde(default)]
        struct OpBody {
            response_range: Option<RangeBody>,
        }
        let got: TxnBody = self.call("compare-and-swap", "/v3/kv/txn", body).await?;
        let current = got
            .responses
            .into_iter()
            .find_map(|r| r.response_range)
            .and_then(|r| r.kvs.into_iter().next());
        Ok(Swap {
            revision: got.header.revision,
            succeeded: got.succeeded,
            current,
        })
    }

    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<LeaseGrant, FleetError> {
        let got: LeaseBody = self
            .call(
                "lease grant",
                "/v3/lease/grant",
                json!({ "TTL": ttl_secs.to_string() }),
            )
            .await?;
        if !got.error.is_empty() {
            return Err(FleetError::Etcd(EtcdError::Status {
                endpoint: self.endpoint_name(),
                status: StatusCode::OK,
                message: got.error,
            }));
        }
        Ok(LeaseGrant {
            id: got.id,
            ttl: got.ttl,
        })
    }

    /// Renews lease `id` once; `timeout` bounds the whole exchange.
    pub async fn lease_keep_alive(
        &self,
        id: i64,
        timeout: Duration,
    ) -> Result<LeaseGrant, FleetError> {
        let op = "lease keep-alive";
        let body = json!({ "ID": id.to_string() });
        let renew = async {
            // A stream of one: the gateway answers one line and ends.
            let mut stream = self.open(op, "/v3/lease/keepalive", body).await?;
            let line = stream.next_line().await?.ok_or_else(|| {
                FleetError::Etcd(EtcdError::Decode {
                    endpoint: stream.endpoint.clone(),
                    what: "an empty keep-alive answer",
                })
            })?;
            let got: LeaseBody = stream.result(&line)?;
            Ok(LeaseGrant { id, ttl: got.ttl })
        };
        match tokio::time::timeout(timeout, renew).await {
            Ok(r) => r,
            Err(_) => {
                self.rotate();
                Err(FleetError::Timeout { op, timeout })
            }
        }
    }

    pub async fn lease_revoke(&self, id: i64) -> Result<(), FleetError> {
        self.call::<Value>(
            "lease revoke",
            "/v3/lease/revoke",
            json!({ "ID": id.to_string() }),
        )
        .await
        .map(drop)
    }

    /// Watches `key` from `start_revision` on.
    pub async fn watch(&self, key: &str, start_revision: i64) -> Result<WatchStream, FleetError> {
        let body = json!({ "create_request": {
            "key": B64.encode(key),
            "start_revision": start_revision.to_string(),
        }});
        let op = "watch";
        match tokio::time::timeout(self.op_timeout, self.open(op, "/v3/watch", body)).await {
            Ok(r) => r.map(|inner| WatchStream { inner }),
            Err(_) => {
                self.rotate();
                Err(FleetError::Timeout {
                    op,
                    timeout: self.op_timeout,
                })
            }
        }
    }

    /// One request with a JSON answer, bounded by the operation timeout.
    async fn call<T: DeserializeOwned>(
        &self,
        op: &'static str,
        path: &'static str,
        body: Value,
    ) -> Result<T, FleetError> {
        let exchange = async {
            let (endpoint, resp) = self.send(op, path, &body).await?;
            let bytes = read_all(&endpoint, resp.into_body()).await?;
            serde_json::from_slice(&bytes).map_err(|_| EtcdError::Decode { endpoint, what: op })
        };
        match tokio::time::timeout(self.op_timeout, exchange).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_transport() {
                    self.rotate();
                }
                Err(FleetError::Etcd(e))
            }
            Err(_) => {
                self.rotate();
                Err(FleetError::Timeout {
                    op,
                    timeout: self.op_timeout,
                })
            }
        }
    }

    /// Starts a streamed answer (a watch, a keep-alive).
    async fn open(
        &self,
        op: &'static str,
        path: &'static str,
        body: Value,
    ) -> Result<Lines, FleetError> {
        match self.send(op, path, &body).await {
            Ok((endpoint, resp)) => Ok(Lines {
                endpoint,
                body: resp.into_body(),
                buf: BytesMut::new(),
            }),
            Err(e) => {
                if e.is_transport() {
                    self.rotate();
                }
                Err(FleetError::Etcd(e))
            }
        }
    }

    /// Sends `body` to `path` on the current endpoint, authenticating first
    /// when needed and once more when etcd refuses the token; returns the
    /// response when its status is 200.
    async fn send(
        &self,
        op: &'static str,
        path: &'static str,
        body: &Value,
    ) -> Result<(String, http::Response<hyper::body::Incoming>), EtcdError> {
        let body = Bytes::from(body.to_string());
        let mut refreshed = false;
        loop {
            let base = self.endpoint();
            let endpoint = origin(&base);
            let token = match &self.credentials {
                Some((user, password_file)) => {
                    Some(self.token(user, password_file, &base, refreshed).await?)
                }
                None => None,
            };
            let resp = self.post(&base, path, body.clone(), token.as_ref()).await?;
            if resp.status() == StatusCode::OK {
                return Ok((endpoint, resp));
            }
            let status = resp.status();
            let message = error_message(&read_all(&endpoint, resp.into_body()).await?);
            let stale_token = self.credentials.is_some()
                && status == StatusCode::UNAUTHORIZED
                && message.contains("invalid auth token");
            if stale_token && !refreshed {
                tracing::debug!(op, "etcd refused the auth token; authenticating again");
                refreshed = true;
                continue;
            }
            return Err(EtcdError::Status {
                endpoint,
                status,
                message,
            });
        }
    }

    async fn post(
        &self,
        base: &Uri,
        path: &str,
        body: Bytes,
        token: Option<&HeaderValue>,
    ) -> Result<http::Response<hyper::body::Incoming>, EtcdError> {
        let uri = format!("{}{path}", origin(base));
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&uri)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, t.clone());
        }
        let req = req.body(Full::new(body)).map_err(|_| EtcdError::Decode {
            endpoint: origin(base),
            what: "a request URL",
        })?;
        self.http
            .request(req)
            .await
            .map_err(|source| EtcdError::Connect {
                endpoint: origin(base),
                source,
            })
    }

    /// The token to send: the one held, or a new one (`fresh`: always new).
    async fn token(
        &self,
        user: &str,
        password_file: &std::path::Path,
        base: &Uri,
        fresh: bool,
    ) -> Result<HeaderValue, EtcdError> {
        if !fresh {
            if let Some(t) = lock(&self.token).clone() {
                return Ok(t);
            }
        }
        let password =
            std::fs::read_to_string(password_file).map_err(|source| EtcdError::PasswordFile {
                path: password_file.display().to_string(),
                source,
            })?;
        // A trailing newline is how most tools write a Secret's file.
        let password = password.trim_end_matches(['\r', '\n']);
        let body = json!({ "name": user, "password": password }).to_string();
        let endpoint = origin(base);
        let resp = self
            .post(base, "/v3/auth/authenticate", Bytes::from(body), None)
            .await?;
        let status = resp.status();
        let bytes = read_all(&endpoint, resp.into_body()).await?;
        if status != StatusCode::OK {
            // etcd's text ("authentication failed, invalid user ID or
            // password") names no secret.
            return Err(EtcdError::Status {
                endpoint,
                status,
                message: format!(
                    "authentication as fleet.username {user:?} failed: {}",
                    error_message(&bytes)
                ),
            });
        }
        #[derive(Deserialize)]
        struct AuthBody {
            #[serde(default)]
            token: String,
        }
        let token = serde_json::from_slice::<AuthBody>(&bytes)
            .ok()
            .and_then(|b| HeaderValue::from_str(&b.token).ok())
            .filter(|t| !t.is_empty())
            .ok_or(EtcdError::Decode {
                endpoint,
                what: "an authentication answer without a token",
            })?;
        let mut token = token;
        token.set_sensitive(true);
        *lock(&self.token) = Some(token.clone());
        Ok(token)
    }

    fn endpoint(&self) -> Uri {
        let e = lock(&self.endpoints);
        e.list[e.current % e.list.len()].clone()
    }

    fn endpoint_name(&self) -> String {
        origin(&self.endpoint())
    }

    /// Moves to the next endpoint, re-reading `fleet.endpoints_file` first
    /// (a Secret may have changed); an unreadable file keeps the list held.
    fn rotate(&self) {
        let reread = self.endpoints_file.as_ref().map(|p| read_endpoints(p));
        let mut e = lock(&self.endpoints);
        match reread.map(|r| {
            r.and_then(|list| check_endpoints(&list, "fleet.endpoints_file").map(|()| list))
        }) {
            Some(Ok(list)) if list != e.list => {
                tracing::info!(
                    endpoints = list.len(),
                    "fleet: etcd endpoints re-read from fleet.endpoints_file"
                );
                e.list = list;
            }
            Some(Err(err)) => tracing::warn!(error = %err, "keeping the etcd endpoints held"),
            Some(Ok(_)) | None => {}
        }
        e.current = (e.current + 1) % e.list.len();
        // A new endpoint may be another member: its token is another's.
        drop(e);
        if self.credentials.is_some() {
            *lock(&self.token) = None;
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct LeaseBody {
    #[serde(rename = "ID", deserialize_with = "int")]
    id: i64,
    #[serde(rename = "TTL", deserialize_with = "int")]
    ttl: i64,
    error: String,
}

/// etcd's text from an error answer (`{"error": ..., "message": ...}`).
fn error_message(body: &[u8]) -> String {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let text = v.as_ref().and_then(|v| {
        v.get("message")
            .or_else(|| v.get("error"))
            .and_then(Value::as_str)
    });
    match text {
        Some(t) => t.chars().take(300).collect(),
        None => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    }
}

/// The smallest key after every key starting with `prefix` (etcd's
/// `range_end` for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): to the end of the keyspace.
    vec![0]
}

fn origin(u: &Uri) -> String {
    format!(
        "{}://{}",
        u.scheme_str().unwrap_or("http"),
        u.authority().map_or("", |a| a.as_str())
    )
}

/// A 64-bit integer the gateway sends as a string (or, leniently, a number).
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        S(String),
        N(i64),
    }
    match Int::deserialize(d)? {
        Int::N(n) => Ok(n),
        Int::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    B64.decode(s.as_bytes()).map_err(serde::de::Error::custom)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn gateway_json_is_read_with_string_integers_and_base64_bytes() {
        let body = br#"{"header":{"revision":"7"},"kvs":[{"key":"L2s=","create_revision":"2","mod_revision":"7","version":"3","value":"eA==","lease":"42"}],"count":"1"}"#;
        let got: RangeBody = serde_json::from_slice(body).expect("json");
        assert_eq!(got.header.revision, 7);
        let kv = &got.kvs[0];
        assert_eq!(
            (kv.key.as_slice(), kv.value.as_slice()),
            (&b"/k"[..], &b"x"[..])
        );
        assert_eq!((kv.create_revision, kv.mod_revision, kv.lease), (2, 7, 42));
        // Fields at their default value are left out.
        let empty: RangeBody = serde_json::from_slice(br#"{"header":{}}"#).expect("json");
        assert!(empty.kvs.is_empty());
        assert_eq!(empty.header.revision, 0);
    }

    #[test]
    fn error_text_is_etcds_own() {
        assert_eq!(
            error_message(br#"{"error":"etcdserver: invalid auth token","code":16,"message":"etcdserver: invalid auth token"}"#),
            "etcdserver: invalid auth token"
        );
        assert_eq!(error_message(b"not json"), "not json");
    }
}
