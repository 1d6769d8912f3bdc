//! `failway run` as a child process, for tests that read what it logs.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running `failway run --log-format json`; killed by PID when dropped.
pub struct RunningBinary {
    child: Option<Child>,
    // Drained as it comes, so a full pipe never blocks failway's logging.
    stderr: Option<JoinHandle<String>>,
}

impl RunningBinary {
    /// Starts `failway run` on `config` and waits until its admin listener
    /// on `admin_port` answers `/readyz` with 200.
    pub async fn start(config: &Path, admin_port: u16) -> RunningBinary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_failway"))
            .args(["run", "--log-format", "json", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failway starts");
        let mut pipe = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        });
        let running = RunningBinary {
            child: Some(child),
            stderr: Some(stderr),
        };
        let url = format!("http://127.0.0.1:{admin_port}/readyz");
        super::eventually_async(Duration::from_secs(10), "failway ready", || {
            let url = url.clone();
            async move { super::failway::req("GET", &url).try_send().await == Some(200) }
        })
        .await;
        running
    }

    /// Sends SIGTERM, waits (bounded) for the exit, and returns its status
    /// and everything it wrote on stderr.
    pub async fn stop(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let kill = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(kill.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("failway did not exit after SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let stderr = self.stderr.take().expect("reader").join().expect("reader");
        (status, stderr)
    }
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
