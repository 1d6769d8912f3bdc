//! A start that cannot bind a listener writes nothing: the state file
//! appears only once every port is held.

use crate::common::failway as fw;

#[tokio::test]
async fn a_start_on_a_taken_port_writes_no_state_file() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let mut cfg = fw::config("http://127.0.0.1:1", "http://127.0.0.1:2", "");
    cfg.state.path = Some(state.clone());
    cfg.admin.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let options = failway::app::StartOptions {
        active_health_checks: false,
        ..Default::default()
    };
    let err = match failway::app::start_with(cfg.clone(), options).await {
        Ok(_) => panic!("started on a taken port"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("admin.listen"), "{err}");
    assert!(
        !state.exists(),
        "the state file was written before the bind failed"
    );

    drop(taken);
    let app = fw::start(cfg).await;
    crate::common::eventually(std::time::Duration::from_secs(5), "state file", || {
        state.exists()
    })
    .await;
    app.shutdown().await;
}
