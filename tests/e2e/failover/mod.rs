//! The failover engine: the driver under paused time, and outages end to
//! end.

mod driver;
mod late_writes;
mod outage;
