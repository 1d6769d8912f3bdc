//! The admin listeners: their own defences (bounded connections and request
//! time, operator actions only from a local, same-origin JSON client) and
//! the running configuration they show.

mod config_dump;
mod console;
mod guard;
