//! What failway exports: exact series, and a real Prometheus scraping it.

mod exported;
mod scrape;
