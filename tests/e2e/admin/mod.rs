//! The admin listeners' own defences: bounded connections and request
//! time, and operator actions only from a local, same-origin JSON client.

mod console;
mod guard;
