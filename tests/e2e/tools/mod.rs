//! The tools beside the proxy: the CLI, the demo, the simulator and the
//! official Key Protect client driven through failway.

mod check_files;
mod cli;
mod ctl_codes;
mod demo;
mod python_client;
mod sim;
