//! A hook's delivery task: one event at a time, in order, each attempt
//! bounded by the hook's `timeout`, retried with backoff until
//! `max_attempts`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::mpsc;

use super::{backoff, headers, HookMetrics};
use crate::config::HookConfig;
use crate::upstream::client::ClientError;

pub type HookClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub fn client(cfg: &HookConfig) -> Result<HookClient, ClientError> {
    let builder = crate::upstream::client::https_builder("hooks", None)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.timeout));
    let connector = builder.enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(1)
        .build(connector))
}

pub struct Delivery {
    pub cfg: HookConfig,
    pub client: HookClient,
    pub metrics: HookMetrics,
    pub name: String,
}

impl Delivery {
    /// Until every sender is gone (failway stops).
    pub async fn run(self, mut rx: mpsc::Receiver<Bytes>) {
        while let Some(body) = rx.recv().await {
            self.deliver(body).await;
        }
    }

    async fn deliver(&self, body: Bytes) {
        let max = self.cfg.max_attempts;
        for attempt in 1..=max {
            let outcome = tokio::time::timeout(self.cfg.timeout, self.attempt(body.clone()))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.cfg.timeout)));
            match outcome {
                Ok(()) => {
                    self.metrics.count("delivered");
                    return;
                }
                Err(error) if attempt == max => {
                    self.metrics.count("failed");
                    tracing::warn!(hook = %self.name, attempts = max, %error, "hook delivery given up");
                    return;
                }
                Err(error) => {
                    self.metrics.count("retried");
                    let wait = backoff(attempt);
                    tracing::info!(hook = %self.name, attempt, %error, retry_in_ms = wait.as_millis() as u64, "hook delivery failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One POST; `Err` says why it did not count as delivered (no header
    /// value, no URL path: they may be secret).
    async fn attempt(&self, body: Bytes) -> Result<(), String> {
        let mut req = http::Request::post(self.cfg.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("failway/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(path) = &self.cfg.headers_file {
            for (name, value) in headers::read(path).map_err(|e| e.to_string())? {
                req = req.header(name, value);
            }
        }
        let req = req
            .body(Full::new(body))
            .map_err(|_| "the request could not be built".to_owned())?;
        let resp = self.client.request(req).await.map_err(|e| {
            // hyper-util's error names the connect failure without the URL.
            let mut text = e.to_string();
            if let Some(source) = std::error::Error::source(&e) {
                text = format!("{text}: {source}");
            }
            text
        })?;
        let status = resp.status();
        // Read the answer through, so the connection can be reused.
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }
}
