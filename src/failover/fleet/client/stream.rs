//! Streamed answers of the JSON gateway (a watch, a keep-alive): one JSON
//! object a line, `{"result": ...}` or `{"error": ...}`; and whole answers
//! read to their end within a size limit.

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::{EtcdError, WatchMessage, MAX_MESSAGE};
use crate::failover::fleet::FleetError;

/// A streamed answer, one JSON object a line.
pub(super) struct Lines {
    pub(super) endpoint: String,
    pub(super) body: hyper::body::Incoming,
    pub(super) buf: BytesMut,
}

impl Lines {
    /// The next non-empty line; `None` when the stream ended.
    pub(super) async fn next_line(&mut self) -> Result<Option<Bytes>, FleetError> {
        loop {
            if let Some(at) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(at + 1).freeze();
                let line = line.slice(..at);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            if self.buf.len() > MAX_MESSAGE {
                return Err(self.decode_error("a message over 4 MiB"));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Some(Err(source)) => {
                    return Err(FleetError::Etcd(EtcdError::Body {
                        endpoint: self.endpoint.clone(),
                        source,
                    }))
                }
                None if self.buf.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                // A last line without its newline.
                None => return Ok(Some(std::mem::take(&mut self.buf).freeze())),
            }
        }
    }

    /// The `result` of one streamed line, or the error etcd put there.
    pub(super) fn result<T: DeserializeOwned + Default>(
        &self,
        line: &[u8],
    ) -> Result<T, FleetError> {
        #[derive(Deserialize)]
        struct Item {
            result: Option<Value>,
            error: Option<Value>,
        }
        let item: Item =
            serde_json::from_slice(line).map_err(|_| self.decode_error("a stream line"))?;
        if let Some(err) = item.error {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_owned();
            let status = err
                .get("http_code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(FleetError::Etcd(EtcdError::Status {
                endpoint: self.endpoint.clone(),
                status,
                message,
            }));
        }
        match item.result {
            Some(v) => serde_json::from_value(v).map_err(|_| self.decode_error("a stream result")),
            None => Ok(T::default()),
        }
    }

    fn decode_error(&self, what: &'static str) -> FleetError {
        FleetError::Etcd(EtcdError::Decode {
            endpoint: self.endpoint.clone(),
            what,
        })
    }
}

/// A live watch.
pub(crate) struct WatchStream {
    pub(super) inner: Lines,
}

impl WatchStream {
    /// The next message; `None` when etcd ended the stream.
    pub async fn message(&mut self) -> Result<Option<WatchMessage>, FleetError> {
        match self.inner.next_line().await? {
            Some(line) => self.inner.result(&line).map(Some),
            None => Ok(None),
        }
    }
}

pub(super) async fn read_all(
    endpoint: &str,
    body: hyper::body::Incoming,
) -> Result<Bytes, EtcdError> {
    let limited = http_body_util::Limited::new(body, MAX_MESSAGE);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(source) => Err(EtcdError::Body {
                endpoint: endpoint.to_owned(),
                source: *source,
            }),
            Err(_) => Err(EtcdError::Decode {
                endpoint: endpoint.to_owned(),
                what: "an answer over 4 MiB",
            }),
        },
    }
}
