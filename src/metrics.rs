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

/// A service's registry: every series registered in it carries
/// `service="NAME"`, so a service's families need no label of their own
/// and cost nothing more to record.
pub fn service_registry(name: &str) -> Registry {
    let labels = std::collections::HashMap::from([("service".to_owned(), name.to_owned())]);
    // Only an invalid label name fails; "service" is valid.
    Registry::new_custom(None, Some(labels)).unwrap_or_default()
}

/// Renders the registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> Vec<u8> {
    encode_all(registry, &[])
}

/// Renders the process registry and the services' registries as one
/// exposition: a family several services register appears once, with a
/// series per service.
pub fn encode_all(main: &Registry, services: &[Registry]) -> Vec<u8> {
    let families = gather_all(main, services);
    let mut buf = Vec::with_capacity(16 * 1024);
    // Encoding into a Vec cannot fail on I/O; a family with no samples is skipped.
    let _ = TextEncoder::new().encode(&families, &mut buf);
    buf
}

/// Every family of the process and the services, merged by name.
pub fn gather_all(main: &Registry, services: &[Registry]) -> Vec<prometheus::proto::MetricFamily> {
    let mut families = main.gather();
    for r in services {
        for mut f in r.gather() {
            match families.iter_mut().find(|e| e.name() == f.name()) {
                Some(e) => e.mut_metric().extend(f.take_metric()),
                None => families.push(f),
            }
        }
    }
    families.sort_by(|a, b| a.name().cmp(b.name()));
    families
}
