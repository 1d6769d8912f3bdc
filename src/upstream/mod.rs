//! The upstream half: one client per region (`client`: HTTP/1.1 through
//! failway's own pool, HTTP/2 through hyper-util, both over rustls), the
//! pool (`pool`), DNS caching and connection ages (`dns`), and the request
//! body as it goes upstream (`body`: replayable up to `retry.buffer_body`,
//! watched for stalls). The inbound half, which decides what to send where,
//! is `proxy`; this one only sends and reports what happened.

pub(crate) mod body;
pub mod client;
pub mod dns;
pub(crate) mod pool;
