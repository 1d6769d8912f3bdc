//! `failway demo --interactive`: after the script, the stack keeps running
//! and the demo prints where everything listens and ready-to-paste commands
//! (Key Protect calls with curl, `failway ctl`, the simulators' fault
//! switches), so the incident can be replayed by hand.
//!
//! The signal handlers are installed before "Press Ctrl-C" is printed: a
//! Ctrl-C sent as soon as the prompt shows must not be lost.

use tokio::signal::unix::{signal, SignalKind};

use super::narrator::Narrator;
use super::stack::{Stack, DEMO_TOKEN};
use super::DemoError;

/// The commands for this stack, one paragraph per purpose.
pub fn commands(stack: &Stack) -> String {
    let kp = stack.proxy_url();
    let admin = stack.admin_url();
    let primary = stack.primary_control_url();
    let replica = stack.replica_control_url();
    let headers = format!(
        "-H 'bluemix-instance: {}' -H 'Authorization: Bearer {DEMO_TOKEN}'",
        stack.instance
    );
    let key = r#"{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.key+json","name":"my-root","extractable":false}]}"#;
    format!(
        "\
Everything keeps running. Ports:
  failway   {kp}   (admin {admin})
  console   {admin}/   (open it in a browser: the incident live, and the operator's actions)
  primary   http://{p_api}   (control {primary})
  replica   http://{r_api}   (control {replica})

Key Protect through failway (watch the failway-region header):
  curl -si {kp}/api/v2/keys {headers}
  curl -si -X POST {kp}/api/v2/keys {headers} -H 'content-type: application/json' -d '{key}'
  curl -si -X POST {kp}/api/v2/keys/KEY_ID/actions/wrap {headers} -H 'content-type: application/json' -d '{{}}'

Operator:
  failway ctl --admin {admin} status
  failway ctl --admin {admin} failover --reason \"drill\"
  failway ctl --admin {admin} enable-writes --reason \"outage confirmed\"
  failway ctl --admin {admin} failback --reason \"primary back\"          (add --force over the latch)

Faults (primary shown; the replica's control is {replica}):
  curl -X POST {primary}/faults -d '{{\"outage\":true}}'
  curl -X POST {primary}/faults -d '{{\"error_503\":{{\"retry_after\":2}}}}'
  curl -X POST {primary}/faults -d '{{\"latency_ms\":1500}}'
  curl -X POST {primary}/faults/clear

Press Ctrl-C to stop.",
        p_api = stack.primary.addr(),
        r_api = stack.replica.addr(),
    )
}

/// Prints the commands and waits for SIGINT or SIGTERM; a second signal
/// while the stack stops exits at once.
pub async fn keep_running(stack: &Stack, n: &Narrator) -> Result<(), DemoError> {
    let mut int = signal(SignalKind::interrupt()).map_err(DemoError::Signal)?;
    let mut term = signal(SignalKind::terminate()).map_err(DemoError::Signal)?;
    n.plain("");
    n.plain(&commands(stack));
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    n.plain("stopping");
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        std::process::exit(130);
    });
    Ok(())
}
