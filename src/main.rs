//! The `failway` command: parses arguments, loads the configuration (exit 64
//! on a bad one, before any port is bound) and runs the app.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use failway::config::Config;
use failway::telemetry::{self, LogFormat};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// EX_USAGE from sysexits.h: the configuration (the input) is wrong.
const EXIT_CONFIG: u8 = 64;
/// EX_SOFTWARE-ish: failway could not start (port taken, file limit).
const EXIT_START: u8 = 70;

#[derive(Parser)]
#[command(
    name = "failway",
    version,
    about = "A failover-aware reverse proxy for regional APIs with one-way replication"
)]
struct Cli {
    /// Log format on stderr (RUST_LOG filters, default "info").
    #[arg(long, value_enum, default_value = "pretty", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The config file (TOML); relative paths in it resolve against its folder.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and the files it names (tokens, certificates,
    /// the state folder) and print the effective config (exit 64 on errors).
    Check {
        /// The config file to check.
        #[arg(long, short)]
        config: PathBuf,
        /// Check the values only, not the files they name (for a config
        /// checked away from the machine it runs on).
        #[arg(long)]
        offline: bool,
    },
    /// Play a scripted regional incident against two local simulated regions (--interactive: then keep them running).
    Demo(failway::tools::demo::DemoArgs),
    /// Run a local Key Protect-compatible region simulator (for demos and failover drills).
    Sim(failway::tools::sim::SimArgs),
    /// Talk to a running failway's admin API (status, failover, enable-writes, failback).
    Ctl(failway::tools::ctl::CtlArgs),
    /// Print a shell completion script (e.g. `failway completions bash > /etc/bash_completion.d/failway`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout (e.g. `failway man > failway.1`).
    Man,
    /// Print the class (read or write) of a request and the rule that decided it.
    Classify {
        /// Config whose profile and rules to use (default: the key-protect profile).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The `[[service]]` whose classify settings to use; required when
        /// the config has more than one.
        #[arg(long, requires = "config")]
        service: Option<String>,
        /// HTTP method, e.g. POST.
        method: String,
        /// Path with optional query, e.g. "/api/v2/keys/abc?action=wrap".
        target: String,
    },
}

/// The runtime: `workers` threads (default: the CPUs available to the
/// process).
fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    // One worker: tokio's single-threaded scheduler does the same work
    // without the work-stealing bookkeeping.
    let mut rt = if workers == Some(1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    rt.enable_all();
    if let Some(n) = workers.filter(|n| *n > 1) {
        rt.worker_threads(n);
    }
    rt.build().map_err(|e| {
        eprintln!("cannot start the runtime: {e}");
        ExitCode::from(EXIT_START)
    })
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprintln!("{}: {} error(s):", path.display(), errors.len());
        for e in errors.iter() {
            eprintln!("  {e}");
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "failway", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("failway man: {e}");
                    ExitCode::from(EXIT_START)
                }
            }
        }
        Command::Check { config, offline } => {
            ExitCode::from(failway::tools::check::run(&config, offline))
        }
        Command::Classify {
            config,
            service,
            method,
            target,
        } => classify(config, service.as_deref(), &method, &target),
        Command::Demo(args) => {
            failway::tools::demo::init_logging(cli.log_format);
            let rt = match runtime(None) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match rt.block_on(failway::tools::demo::run(args)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("failway demo: {e}");
                    ExitCode::from(EXIT_START)
                }
            }
        }
        Command::Sim(args) => {
            telemetry::init(cli.log_format);
            let rt = match runtime(None) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match rt.block_on(failway::tools::sim::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    eprintln!("failway sim: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
                Err(e) => {
                    tracing::error!("failway sim: {e}");
                    ExitCode::from(EXIT_START)
                }
            }
        }
        Command::Ctl(args) => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(EXIT_START);
                }
            };
            match rt.block_on(failway::tools::ctl::run(args)) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("failway ctl: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Command::Run { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            telemetry::init(cli.log_format);
            for w in &cfg.warnings {
                tracing::warn!("{w}");
            }
            if let Err(e) = failway::app::raise_file_limit(&cfg) {
                tracing::error!("{e}");
                return ExitCode::from(EXIT_START);
            }
            let rt = match runtime(cfg.proxy.worker_threads) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            rt.block_on(run(cfg, config))
        }
    }
}

async fn run(cfg: Config, path: PathBuf) -> ExitCode {
    let options = failway::app::StartOptions {
        config_path: Some(path),
        ..Default::default()
    };
    let running = match failway::app::start_with(cfg, options).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EXIT_START);
        }
    };
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let stop = failway::shutdown::wait_for_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                running.reload().await;
            }
        }
    }
    running.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

fn classify(
    config: Option<PathBuf>,
    service: Option<&str>,
    method: &str,
    target: &str,
) -> ExitCode {
    let (profile, rules) = match config {
        Some(path) => match load(&path).and_then(|cfg| classify_settings(&cfg, &path, service)) {
            Ok(c) => (c.profile, c.rules),
            Err(code) => return code,
        },
        None => (failway::config::Profile::KeyProtect, Vec::new()),
    };
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        eprintln!("{method:?} is not an HTTP method");
        return ExitCode::from(EXIT_CONFIG);
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let classifier = failway::classify::Classifier::new(profile, &rules);
    let decision = classifier.classify(&method, path, query);
    println!("{decision}");
    ExitCode::SUCCESS
}

/// The classify settings of the service named `service`, or of the only
/// one; several services and none named is an error listing them.
fn classify_settings(
    cfg: &Config,
    path: &std::path::Path,
    service: Option<&str>,
) -> Result<failway::config::ClassifyConfig, ExitCode> {
    let services = cfg.services();
    let names = || {
        services
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let spec = match service {
        Some(name) => services.iter().find(|s| s.name == name).ok_or_else(|| {
            format!(
                "--service: {} has no service named {name:?}; its services are: {}",
                path.display(),
                names()
            )
        }),
        None => match services.as_slice() {
            [only] => Ok(only),
            _ => Err(format!(
                "--service: required, {} has {} services: {}",
                path.display(),
                services.len(),
                names()
            )),
        },
    };
    match spec {
        Ok(spec) => Ok(cfg.for_service(spec).classify),
        Err(message) => {
            eprintln!("{message}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}
