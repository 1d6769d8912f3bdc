//! The failover engine: the driver under paused time, outages end to end,
//! the state file, and reloads while failed over.

mod audit;
mod drill;
mod driver;
mod late_writes;
mod outage;
mod reload;
mod shadow;
mod start_order;
mod state_file;
