//! `failway ctl`: the operator's client for the admin API. `status` prints the
//! mode, deadline, latch and regions as a table (or the raw JSON with
//! `--json`), one block per service when failway has several;
//! `failover`, `enable-writes` and `failback` post an action with its
//! reason; `fleet status` lists what each fleet instance last reported (in
//! fleet mode the actions move the whole fleet). `--service NAME` picks the
//! service (required for actions when there are several); `config` prints
//! the running configuration; `keys verify` checks the duplicated key
//! pairs now (exit 1 when one is not interchangeable). Exit codes ([`EXIT_CODES`], also in `--help`):
//! 0 done (or nothing to do), 1 refused as impossible (409) or not found,
//! 64 usage, 66 the token file is missing or unreadable, 69 the admin API
//! cannot be reached or did not answer in full within `--timeout`, 77 the
//! token was refused (401/403). Strings from the server are printed with
//! control characters escaped, so a stored reason cannot drive the terminal.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

mod print;

use self::print::{action_line, printable};
pub use self::print::{fleet_table, keys_table, status_output, status_table};

/// The exit codes, as `failway ctl --help` prints them.
pub const EXIT_CODES: &str =
    "Exit codes: 0 done (or nothing to do); 1 refused as impossible (409) or not found, \
or a key pair not interchangeable (keys verify); 64 usage; 66 --token-file missing or unreadable; 69 admin API unreachable or too slow; \
77 the token was refused (401/403)";

#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct CtlArgs {
    /// Admin API base URL.
    #[arg(long, default_value = "http://127.0.0.1:9901", global = true)]
    pub admin: String,
    /// File holding the admin bearer token (admin.token_file).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Print the JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up when the whole exchange (connect, answer and its body) takes longer.
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The service to show or act on (its `name`); required for actions
    /// and `fleet status` when failway has more than one.
    #[arg(long, global = true)]
    pub service: Option<String>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Show the mode, the read-only deadline, the latch and both regions.
    Status,
    /// Fail over to the replica (read-only first). --force: even to a replica judged down.
    Failover {
        /// Why (recorded in /status and the state file).
        #[arg(long)]
        reason: String,
        /// Fail over even though the replica is judged down.
        #[arg(long)]
        force: bool,
    },
    /// Enable writes on the replica now. --force: during a drill, turning it into a real failover.
    EnableWrites {
        /// Why (recorded in /status and the state file).
        #[arg(long)]
        reason: String,
        /// During a drill: turn it into a real failover.
        #[arg(long)]
        force: bool,
    },
    /// Fail back to the primary. --force: even over the replica-writes latch.
    Failback {
        /// Why (recorded in /status and the state file).
        #[arg(long)]
        reason: String,
        /// Fail back even over the replica-writes latch or a primary judged down.
        #[arg(long)]
        force: bool,
    },
    /// Print the running configuration (TOML, secrets redacted) and when it was last loaded.
    Config,
    /// Rehearse a failover: read-only on the replica for --duration, then back
    /// by itself. --stop: end the drill under way now.
    Drill {
        /// How long the drill lasts (e.g. 10m), at most failover.max_drill.
        #[arg(long, required_unless_present = "stop")]
        duration: Option<String>,
        /// Why (recorded in /status and the state file).
        #[arg(long)]
        reason: String,
        /// End the drill under way now, with a failback.
        #[arg(long, conflicts_with = "duration")]
        stop: bool,
    },
    /// The audit trail (the audit file, else the transitions /status keeps), oldest first.
    History {
        /// Only what happened within this long (e.g. 1h, 30m).
        #[arg(long)]
        since: Option<String>,
    },
    /// Fleet mode: the instances sharing this instance's record.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Duplicated keys ([[key_pairs]]).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Check every key pair of the service now and print a table; exit 0
    /// only when every pair is interchangeable, 1 when one is not.
    Verify,
}

#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// List what each instance last reported (id, mode, primary down, replica healthy, epoch, age).
    Status,
}

pub const EXIT_REFUSED: u8 = 1;
/// EX_NOINPUT: the token file cannot be read.
pub const EXIT_NO_INPUT: u8 = 66;
pub const EXIT_UNAVAILABLE: u8 = 69;
/// EX_NOPERM: the admin API refused the token.
pub const EXIT_NO_PERM: u8 = 77;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot read --token-file {path}: {source}")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid --admin URL {0:?}")]
    Url(String),
    #[error("cannot reach the admin API at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the admin API answered something that is not JSON (status {0})")]
    NotJson(u16),
}

impl CtlError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Token { .. } => EXIT_NO_INPUT,
            CtlError::Url(_) => crate::tools::check::EXIT_CONFIG,
            CtlError::Unreachable { .. } | CtlError::NotJson(_) => EXIT_UNAVAILABLE,
        }
    }
}

/// Runs a ctl command; returns the process exit code.
pub async fn run(args: CtlArgs) -> Result<u8, CtlError> {
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| CtlError::Token {
                    path: path.display().to_string(),
                    source,
                })?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let base = args.admin.trim_end_matches('/');
    let (method, path, body) = request_of(&args.command, args.service.as_deref());
    let url = format!("{base}{path}");
    let uri: http::Uri = url.parse().map_err(|_| CtlError::Url(args.admin.clone()))?;
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = &token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = req
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| CtlError::Url(args.admin.clone()))?;
    let (status, bytes) =
        exchange(req, args.timeout)
            .await
            .map_err(|message| CtlError::Unreachable {
                url: url.clone(),
                message,
            })?;
    let ok = (200..300).contains(&status);
    if let (CtlCommand::Config, true) = (&args.command, ok) {
        print!("{}", printable_config(&bytes));
        return Ok(0);
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| CtlError::NotJson(status))?;
    let now = SystemTime::now();
    match &args.command {
        CtlCommand::Status if ok => {
            match status_output(&value, args.service.as_deref(), args.json, now) {
                Ok(text) => print!("{text}"),
                Err(message) => {
                    eprintln!("failway ctl: {message}");
                    return Ok(EXIT_REFUSED);
                }
            }
        }
        _ if args.json => println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        ),
        CtlCommand::Fleet { .. } if status == 200 => print!("{}", fleet_table(&value, now)),
        CtlCommand::Keys { .. } if status == 200 => print!("{}", keys_table(&value)),
        CtlCommand::History { .. } if status == 200 => print!("{}", print::history_table(&value)),
        _ => println!("{}", action_line(status, &value)),
    }
    if let (CtlCommand::Keys { .. }, 200) = (&args.command, status) {
        return Ok(match value["interchangeable"].as_bool() {
            Some(true) => 0,
            _ => EXIT_REFUSED,
        });
    }
    Ok(match status {
        _ if ok => 0,
        401 | 403 => EXIT_NO_PERM,
        _ => EXIT_REFUSED,
    })
}

/// The TOML `GET /config` answered, control characters escaped line by line.
fn printable_config(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        out.push_str(&printable(line));
        out.push('\n');
    }
    out
}

/// The method, path and JSON body of `command`; `service` goes into an
/// action's body and the fleet query (`/status` always lists every service).
fn request_of(command: &CtlCommand, service: Option<&str>) -> (Method, String, Option<Value>) {
    let action = |path: &str, mut body: Value| {
        if let Some(name) = service {
            body["service"] = Value::from(name);
        }
        (Method::POST, path.to_owned(), Some(body))
    };
    match command {
        CtlCommand::Status => (Method::GET, "/status".into(), None),
        CtlCommand::Config => (Method::GET, "/config".into(), None),
        CtlCommand::History { since } => {
            let mut query = Vec::new();
            if let Some(name) = service {
                query.push(format!("service={}", query_escaped(name)));
            }
            if let Some(d) = since {
                query.push(format!("since={}", query_escaped(d)));
            }
            let path = match query.is_empty() {
                true => "/history".to_owned(),
                false => format!("/history?{}", query.join("&")),
            };
            (Method::GET, path, None)
        }
        CtlCommand::Fleet {
            command: FleetCommand::Status,
        } => {
            let path = match service {
                Some(name) => format!("/fleet/instances?service={}", query_escaped(name)),
                None => "/fleet/instances".into(),
            };
            (Method::GET, path, None)
        }
        CtlCommand::Failover { reason, force } => action(
            "/admin/failover",
            serde_json::json!({"reason": reason, "force": force}),
        ),
        CtlCommand::EnableWrites { reason, force } => action(
            "/admin/enable-writes",
            serde_json::json!({"reason": reason, "force": force}),
        ),
        CtlCommand::Drill {
            reason, stop: true, ..
        } => action("/admin/drill/stop", serde_json::json!({"reason": reason})),
        CtlCommand::Drill {
            duration, reason, ..
        } => action(
            "/admin/drill",
            serde_json::json!({"reason": reason, "duration": duration}),
        ),
        CtlCommand::Failback { reason, force } => action(
            "/admin/failback",
            serde_json::json!({"reason": reason, "force": force}),
        ),
        CtlCommand::Keys {
            command: KeysCommand::Verify,
        } => action("/admin/keys/verify", serde_json::json!({})),
    }
}

/// `text` percent-encoded for a query value: everything but the unreserved
/// characters, so that any `--service` given makes a valid URI (and an
/// unknown name gets the admin's 404 listing the services).
fn query_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends `req` and reads the whole answer within `timeout`: an admin that
/// sends its head and then stalls the body must not hang the operator's
/// terminal either.
async fn exchange(req: Request<Full<Bytes>>, timeout: Duration) -> Result<(u16, Bytes), String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let whole = async {
        let resp = client.request(req).await.map_err(|e| cause_chain(&e))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, body.to_bytes()))
    };
    tokio::time::timeout(timeout, whole)
        .await
        .map_err(|_| format!("timed out after {}", humantime::format_duration(timeout)))?
}

/// The error and its causes (`client error (Connect): tcp connect error:
/// Connection refused (os error 111)`): hyper's own text names no cause.
fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_table_lists_each_instance() {
        let v = serde_json::json!([
            {"instance_id": "pod-a", "mode": "failover_read_only", "primary_down": true, "replica_healthy": true, "epoch_seen": 4, "at_unix_ms": 1_000_000},
            {"instance_id": "pod-b", "mode": "failover_read_only", "primary_down": false, "replica_healthy": true, "epoch_seen": 4, "at_unix_ms": 995_000}
        ]);
        let now = std::time::UNIX_EPOCH + Duration::from_millis(1_002_000);
        let t = fleet_table(&v, now);
        assert!(t.starts_with("instance"), "{t}");
        let a = t
            .lines()
            .find(|l| l.starts_with("pod-a"))
            .expect("pod-a line");
        assert!(
            a.contains("failover_read_only") && a.contains("yes") && a.contains("2s ago"),
            "{a}"
        );
        let b = t
            .lines()
            .find(|l| l.starts_with("pod-b"))
            .expect("pod-b line");
        assert!(b.contains("no") && b.contains("7s ago"), "{b}");
    }

    #[test]
    fn status_table_names_mode_latch_and_regions() {
        let v = serde_json::json!({
            "mode": "failover_read_write",
            "since": "2026-11-29T10:00:00.000Z",
            "read_only_deadline": null,
            "replica_writes_latch": true,
            "failback_blocked": "replica_writes",
            "regions": {
                "primary": {"health": "unhealthy", "down": true, "last_status": null, "last_check": "2026-11-29T10:05:00.000Z", "last_error": "connection refused or failed"},
                "replica": {"health": "healthy", "down": false, "last_status": 200, "last_check": "2026-11-29T10:05:00.000Z", "last_error": null}
            },
            "transitions": [{"at": "2026-11-29T10:00:00.000Z", "from": "primary", "to": "failover_read_only", "trigger": "health_check", "reason": "primary down"}]
        });
        let now = humantime::parse_rfc3339("2026-11-29T10:10:00Z").unwrap();
        let t = status_table(&v, now);
        assert!(
            t.contains("failover_read_write since 2026-11-29T10:00:00.000Z (10m 0s ago)"),
            "{t}"
        );
        assert!(t.contains("SET (automatic failback refused)"));
        assert!(t.contains("primary  unhealthy  yes"));
        assert!(t.contains("connection refused or failed"));
        assert!(t.contains("primary -> failover_read_only  [health_check]  primary down"));
    }

    fn two_services() -> Value {
        let one = |mode: &str| {
            serde_json::json!({
                "mode": mode,
                "regions": {"primary": {"health": "healthy"}, "replica": {"health": "healthy"}}
            })
        };
        serde_json::json!({
            "services": {"kp-eu": one("primary"), "kp-us": one("failover_read_only")}
        })
    }

    #[test]
    fn status_prints_one_block_per_service_or_the_one_named() {
        let now = SystemTime::now();
        let all = status_output(&two_services(), None, false, now).unwrap();
        let eu = all.find("service               kp-eu\nmode                  primary");
        let us = all.find("service               kp-us\nmode                  failover_read_only");
        assert!(eu.is_some() && us.is_some(), "{all}");

        let us = status_output(&two_services(), Some("kp-us"), false, now).unwrap();
        assert!(
            us.starts_with("service               kp-us\nmode                  failover_read_only"),
            "{us}"
        );
        assert!(!us.contains("kp-eu"), "{us}");
        let json = status_output(&two_services(), Some("kp-us"), true, now).unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["mode"], "failover_read_only");

        let err = status_output(&two_services(), Some("kp-ap"), false, now).unwrap_err();
        assert_eq!(
            err,
            "no service named \"kp-ap\"; the services are: kp-eu, kp-us"
        );
    }

    #[test]
    fn one_service_prints_as_it_always_did() {
        let now = SystemTime::now();
        let mut v = two_services()["services"]["kp-us"].clone();
        let only = v.clone();
        v["services"] = serde_json::json!({"default": only});
        let t = status_output(&v, None, false, now).unwrap();
        assert_eq!(t, status_table(&v, now));
        assert!(t.starts_with("mode "), "{t}");
        let t = status_output(&v, Some("default"), false, now).unwrap();
        assert!(t.starts_with("service               default\nmode "), "{t}");
    }

    #[test]
    fn service_goes_into_action_bodies_and_the_fleet_query() {
        let failover = CtlCommand::Failover {
            reason: "x".into(),
            force: false,
        };
        let (_, path, body) = request_of(&failover, Some("kp-us"));
        assert_eq!(path, "/admin/failover");
        assert_eq!(body.unwrap()["service"], "kp-us");
        let (_, _, body) = request_of(&failover, None);
        assert!(body.unwrap().get("service").is_none());
        let fleet = CtlCommand::Fleet {
            command: FleetCommand::Status,
        };
        assert_eq!(
            request_of(&fleet, Some("kp-us")).1,
            "/fleet/instances?service=kp-us"
        );
        assert_eq!(
            request_of(&fleet, Some("a b&c")).1,
            "/fleet/instances?service=a%20b%26c"
        );
        assert_eq!(request_of(&fleet, None).1, "/fleet/instances");
    }

    #[test]
    fn keys_verify_posts_for_the_service_and_tabulates_each_pair() {
        let verify = CtlCommand::Keys {
            command: KeysCommand::Verify,
        };
        let (method, path, body) = request_of(&verify, Some("kp-us"));
        assert_eq!(
            (method, path.as_str()),
            (Method::POST, "/admin/keys/verify")
        );
        assert_eq!(body.unwrap()["service"], "kp-us");
        let answer = serde_json::json!({"interchangeable": false, "key_pairs": [{
            "name": "payments-root", "result": "unwrap_refused", "http_status": 422,
            "error_code": "UNPROCESSABLE_CIPHERTEXT_ERR",
            "versions": {"primary": "v2", "replica": "v1"},
            "detail": "replica refused\u{1b}[2J to unwrap"
        }]});
        let table = keys_table(&answer);
        let row = table.lines().nth(1).unwrap();
        for cell in [
            "payments-root",
            "unwrap_refused",
            "422",
            "UNPROCESSABLE_CIPHERTEXT_ERR",
            "v2",
            "v1",
        ] {
            assert!(row.contains(cell), "{cell} in {row}");
        }
        assert!(
            !table.contains('\u{1b}'),
            "control characters are escaped: {table}"
        );
    }

    #[test]
    fn service_names_from_the_server_are_escaped() {
        let mut v = two_services();
        let entry = v["services"]["kp-us"].clone();
        v["services"]["kp\u{1b}[2J"] = entry;
        let t = status_output(&v, None, false, SystemTime::now()).unwrap();
        assert!(t.contains(r"kp\u{1b}[2J"), "{t}");
        let err = status_output(&v, Some("x\u{7}"), false, SystemTime::now()).unwrap_err();
        for out in [t, err] {
            assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        }
    }

    #[test]
    fn strings_from_the_server_are_printed_with_control_characters_escaped() {
        // As a state file written by an older version could still hold.
        let v = serde_json::json!({
            "mode": "failover_read_only",
            "regions": {
                "primary": {"health": "unhealthy", "last_error": "reset\r\nby peer"},
                "replica": {"health": "healthy"}
            },
            "transitions": [{"at": "t", "from": "primary", "to": "failover_read_only", "trigger": "operator", "reason": "drill\u{1b}[2J\u{7}done"}]
        });
        let t = status_table(&v, SystemTime::now());
        assert!(t.contains(r"drill\u{1b}[2J\u{7}done"), "{t}");
        assert!(t.contains(r"reset\r\nby peer"), "{t}");
        let f = fleet_table(
            &serde_json::json!([{"instance_id": "pod\u{1b}]0;x\u{7}", "mode": "primary"}]),
            SystemTime::now(),
        );
        assert!(f.contains(r"pod\u{1b}]0;x\u{7}"), "{f}");
        let a = action_line(400, &serde_json::json!({"error": "bad\u{0}"}));
        assert_eq!(a, r"error 400: bad\0");
        for out in [t, f, a] {
            assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        }
        // Plain text, accents included, is left alone.
        assert_eq!(printable("région de secours"), "région de secours");
        assert_eq!(printable("a\u{202e}b"), r"a\u{202e}b");
    }
}
