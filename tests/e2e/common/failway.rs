//! Starting failway in-process on ephemeral ports for end-to-end tests.

use std::net::SocketAddr;
use std::path::Path;

use failway::app::Running;
use failway::config::Config;

/// A config for tests: both listeners on `127.0.0.1:0`, the given regions,
/// fast timers; `extra` is appended TOML (top-level sections only).
pub fn config(primary: &str, replica: &str, extra: &str) -> Config {
    let text = config_text(primary, replica, extra);
    match Config::from_toml_str(&text, Path::new(".")) {
        Ok(c) => c,
        Err(e) => panic!("test config is invalid:\n{e}\n{text}"),
    }
}

/// The text of [`config`], for tests that write it to a file.
pub fn config_text(primary: &str, replica: &str, extra: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
max_connections = 1000

[admin]
listen = "127.0.0.1:0"

[upstreams.primary]
url = "{primary}"

[upstreams.replica]
url = "{replica}"

{extra}
"#
    )
}

/// Fast probes for failover tests: a region is judged down after 2 failed
/// probes 100 ms apart, and failback waits 400 ms. `failover_extra` goes
/// into the `[failover]` section.
pub fn fast_health(failover_extra: &str) -> String {
    format!(
        r#"
[health]
path = "/health"
interval = "100ms"
timeout = "80ms"
unhealthy_threshold = 2
healthy_threshold = 2

[failover]
failback_after = "400ms"
{failover_extra}
"#
    )
}

/// Starts failway with `cfg`, without active health checks: the fake
/// regions then see only the traffic a test sends.
pub async fn start(cfg: Config) -> Running {
    let options = failway::app::StartOptions {
        active_health_checks: false,
        ..Default::default()
    };
    failway::app::start_with(cfg, options)
        .await
        .expect("failway starts")
}

/// Starts failway with `cfg` as `failway run` does, probes included.
pub async fn start_probing(cfg: Config) -> Running {
    failway::app::start(cfg).await.expect("failway starts")
}

/// The `http://` base URL of a running failway's proxy listener.
pub fn url(r: &Running) -> String {
    format!("http://{}", r.proxy_addr)
}

pub fn addr(r: &Running) -> SocketAddr {
    r.proxy_addr
}

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A plain HTTP/1.1 client for tests.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An h2c (prior knowledge) client for tests.
pub fn h2_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request and collects the whole answer.
pub async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(body.into()))
        .expect("valid test request");
    let resp = client.request(req).await.expect("request answered");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body read").to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// A request to send, built up call by call, for the shapes tests repeat:
/// `fw::req("GET", &url).header("host", "kms.example").send().await`.
pub struct Req {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// A request of `method` to `url`, with no headers and an empty body.
pub fn req(method: &str, url: &str) -> Req {
    Req {
        method: method.to_owned(),
        url: url.to_owned(),
        headers: Vec::new(),
        body: Bytes::new(),
    }
}

impl Req {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The status it gets on a fresh HTTP/1.1 client; `None` when it cannot
    /// connect or the answer breaks off (for polling a starting process).
    pub async fn try_send(self) -> Option<u16> {
        let mut req = http::Request::builder()
            .method(self.method.as_str())
            .uri(&self.url);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(self.body)).ok()?;
        let resp = client().request(req).await.ok()?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await.ok()?;
        Some(status)
    }

    /// Sends it on a fresh HTTP/1.1 client.
    pub async fn send(self) -> Answer {
        self.send_on(&client()).await
    }

    /// Sends it on `client` (to reuse its pool, or to speak h2).
    pub async fn send_on(
        self,
        client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    ) -> Answer {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        send(client, &self.method, &self.url, &headers, self.body).await
    }
}

/// The value of one sample in `/metrics`, e.g.
/// `failway_retries_total{region="primary",reason="connect_error"}`
/// (labels in the order the exposition prints them: alphabetical).
pub async fn metric(r: &Running, sample: &str) -> f64 {
    let text = req("GET", &format!("http://{}/metrics", r.admin_addr))
        .send()
        .await;
    let text = String::from_utf8_lossy(&text.body).to_string();
    super::sample_value(&text, sample).unwrap_or(0.0)
}

/// Waits until `app`'s driver has taken `n` more probe results for
/// `region` (its last check moved on `n` times). Checks that something
/// does not happen wait for this positive event rather than a fixed sleep:
/// with `fast_health`, 9 probes span more than `failback_after`.
pub async fn probes_evaluated(app: &Running, region: failway::region::Region, n: u32) {
    let timeout = std::time::Duration::from_secs(20);
    let deadline = tokio::time::Instant::now() + timeout;
    let last = || app.failover.snapshot().region(region).last_check;
    let mut seen = last();
    let mut count = 0;
    while count < n {
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "only {count} of {n} {} probes evaluated within {timeout:?}",
                region.as_str()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let now = last();
        if now != seen {
            seen = now;
            count += 1;
        }
    }
}

/// POSTs an operator action (`failover`, `enable-writes`, `failback`) with
/// a JSON `body` to the admin listener.
pub async fn admin_post(r: &Running, action: &str, body: &str) -> Answer {
    req("POST", &format!("http://{}/admin/{action}", r.admin_addr))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
}
