//! `failway demo` end to end: the scripted incident runs in-process against
//! two simulated regions and failway on loopback, and every step must
//! behave as failway promises, within a time bound that keeps the demo
//! worth watching.

use std::time::{Duration, Instant};

use failway::tools::demo::{run, DemoArgs};

/// The demo aims at about 10 s with `--fast`; a minute means something hangs.
const BOUND: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripted_incident_behaves_as_expected() {
    let started = Instant::now();
    let result = tokio::time::timeout(
        BOUND,
        run(DemoArgs {
            interactive: false,
            fast: true,
        }),
    )
    .await
    .expect("the demo finishes within the bound");
    match result {
        Ok(passed) => assert!(
            passed,
            "a step did not behave as expected (see the narration)"
        ),
        Err(e) => panic!("the demo could not start: {e}"),
    }
    assert!(started.elapsed() < BOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_serves_key_protect_through_failway_and_stops_cleanly() {
    let stack = failway::tools::demo::start_stack()
        .await
        .expect("the stack starts");
    let snap = stack.failway.failover.snapshot();
    assert_eq!(snap.mode.as_str(), "primary");
    let state_dir = stack.state_dir().to_path_buf();
    assert!(state_dir.is_dir());
    let reply = stack
        .http()
        .kp(http::Method::GET, "/api/v2/keys", None)
        .await
        .expect("answered");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.region(), "primary");
    stack.stop().await;
    assert!(!state_dir.exists(), "the state folder is removed on stop");
}
