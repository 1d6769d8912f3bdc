//! Prometheus metrics. The app owns one [`Registry`] and passes it down; each
//! component registers its own families (`Metrics::register(&Registry)`), and
//! hot-path handles are resolved once, so recording a request is an array
//! index and an atomic add: no label formatting, no map look-up.
//!
//! Labels come from closed enums only (region, class, status class): never a
//! key ID, a raw path or a client address, so the series count is fixed.
//! This module makes the registry and renders it; the families live with
//! the component that records them (the data path's in `proxy::metrics`).

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

/// Creates the app's registry with process and build metrics in it.
pub fn new_registry() -> Registry {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    {
        let pc = prometheus::process_collector::ProcessCollector::for_self();
        // Registering twice is the only failure; a fresh registry cannot hit it.
        let _ = registry.register(Box::new(pc));
    }
    if let Ok(info) = IntGaugeVec::new(
        Opts::new("failway_build_info", "failway build information; always 1."),
        &["version"],
    ) {
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let _ = registry.register(Box::new(info));
    }
    registry
}

/// Renders the registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 * 1024);
    // Encoding into a Vec cannot fail on I/O; a family with no samples is skipped.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    buf
}
