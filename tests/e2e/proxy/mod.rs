//! The inbound data path: forwarding, the gateway role, retries, write
//! blocking and TLS.

mod access_log;
mod fd_limits;
mod forwarding;
mod gateway;
mod limits;
mod pooling;
mod retries;
mod services;
mod slow_clients;
mod tls;
mod write_blocking;
