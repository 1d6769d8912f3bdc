//! The failover engine: the driver under paused time, outages end to end,
//! and the state file.

mod driver;
mod outage;
mod state_file;
