//! The bodies of the scripted incident's steps (order and titles in
//! `scenario`). Each step acts as an application or an operator would,
//! through failway's proxy and admin listeners, prints the equivalent
//! command, and checks what came back: status, answering region, mode.

use std::time::{Duration, Instant, SystemTime};

use http::Method;
use serde_json::{json, Value};

use super::client::{key_body, Reply};
use super::scenario::{check, expect, Incident, StepFailed};
use super::stack::{FAILBACK_AFTER, REPLICATION_LAG};

/// Generous bounds: the demo's probes decide within about a second.
const DETECT_WITHIN: Duration = Duration::from_secs(10);
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

const ENABLE_REASON: &str = "primary region outage confirmed; accept writes on the replica";
const FAILBACK_REASON: &str = "primary back; replica-only keys reconciled";

fn key_ids(reply: &Reply) -> Vec<String> {
    reply.json()["resources"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn first_id(reply: &Reply, what: &str) -> Result<String, StepFailed> {
    reply.json()["resources"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| StepFailed(format!("{what}: no key id in {}", reply.text().trim())))
}

impl Incident<'_> {
    pub(super) async fn unwrap_dek(&self, region: &str) -> Result<(), StepFailed> {
        let path = format!("/api/v2/keys/{}/actions/unwrap", self.root_id);
        let body = json!({ "ciphertext": self.ciphertext });
        let r = self.http.kp(Method::POST, &path, Some(body)).await?;
        expect(&r, 200, region, "unwrap")?;
        check(r.json()["plaintext"] == self.dek.as_str(), || {
            "unwrap returned another plaintext than the wrapped DEK".to_owned()
        })?;
        self.n.ok(&format!(
            "unwrap of the earlier ciphertext -> 200 from {region}: the same DEK"
        ));
        Ok(())
    }

    async fn list(&self, region: &str) -> Result<Vec<String>, StepFailed> {
        let r = self.http.kp(Method::GET, "/api/v2/keys", None).await?;
        expect(&r, 200, region, "list keys")?;
        let ids = key_ids(&r);
        check(ids.contains(&self.root_id), || {
            format!("list keys on the {region} lacks {}", self.root_id)
        })?;
        self.n.ok(&format!(
            "GET /api/v2/keys -> 200 from {region}: {} key(s)",
            ids.len()
        ));
        Ok(ids)
    }

    pub(super) async fn create(
        &self,
        name: &str,
        status: u16,
        region: &str,
    ) -> Result<Reply, StepFailed> {
        let r = self
            .http
            .kp(Method::POST, "/api/v2/keys", Some(key_body(name, true)))
            .await?;
        expect(&r, status, region, &format!("create key {name:?}"))?;
        Ok(r)
    }

    pub(super) async fn normal_traffic(&mut self) -> Result<(), StepFailed> {
        let r = self.create("payments-root", 201, "primary").await?;
        self.root_id = first_id(&r, "create")?;
        self.n.ok(&format!(
            "POST /api/v2/keys -> 201 from primary: root key {}",
            self.root_id
        ));
        let path = format!("/api/v2/keys/{}/actions/wrap", self.root_id);
        let r = self.http.kp(Method::POST, &path, Some(json!({}))).await?;
        expect(&r, 200, "primary", "wrap")?;
        let v = r.json();
        match (v["plaintext"].as_str(), v["ciphertext"].as_str()) {
            (Some(p), Some(c)) => (self.dek, self.ciphertext) = (p.to_owned(), c.to_owned()),
            _ => return Err(StepFailed(format!("wrap answered {}", r.text().trim()))),
        }
        self.n
            .ok("wrap -> 200 from primary: a fresh data encryption key and its ciphertext");
        self.unwrap_dek("primary").await?;
        self.list("primary").await?;
        let started = Instant::now();
        while self.stack.replica.stats().replicated_in == 0 {
            check(started.elapsed() < Duration::from_secs(5), || {
                "the key did not reach the replica within 5s".to_owned()
            })?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.n.ok(&format!(
            "the key was replicated to the replica (lag {REPLICATION_LAG:?}, same id)"
        ));
        Ok(())
    }

    pub(super) async fn outage(&mut self) -> Result<(), StepFailed> {
        self.n.detail(&format!(
            "curl -X POST {}/faults -d '{{\"outage\":true}}'",
            self.stack.primary_control_url()
        ));
        self.stack.primary.faults().set_outage(true);
        self.outage_at = Some(SystemTime::now());
        let addr = self.stack.primary.addr();
        let started = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            check(started.elapsed() < Duration::from_secs(2), || {
                "the primary still accepts connections".to_owned()
            })?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.n.ok(&format!(
            "the primary's API ({addr}) now refuses connections"
        ));
        Ok(())
    }

    pub(super) async fn detection(&mut self) -> Result<(), StepFailed> {
        self.n
            .say("failway probes each region every 500ms; 2 failures in a row mean down");
        let (status, _) = self
            .wait_status("mode failover_read_only", DETECT_WITHIN, |s| {
                s["mode"] == "failover_read_only"
            })
            .await?;
        let last = status["transitions"].as_array().and_then(|t| t.last());
        // From the transition's own timestamp, not from when it was seen.
        let failed_over_at = last
            .and_then(|t| t["at"].as_str())
            .and_then(|at| humantime::parse_rfc3339(at).ok())
            .unwrap_or_else(SystemTime::now);
        let took = self
            .outage_at
            .and_then(|t| failed_over_at.duration_since(t).ok())
            .unwrap_or_default();
        self.detected_in = Some(took);
        self.n.ok(&format!(
            "mode failover_read_only, {:.1}s after the outage began",
            took.as_secs_f64()
        ));
        let primary = &status["regions"]["primary"];
        self.n.detail(&format!(
            "/status: primary {} ({}); transition trigger {}",
            primary["health"].as_str().unwrap_or("-"),
            primary["last_error"].as_str().unwrap_or("-"),
            last.and_then(|t| t["trigger"].as_str()).unwrap_or("-"),
        ));
        Ok(())
    }

    pub(super) async fn replica_reads(&mut self) -> Result<(), StepFailed> {
        self.unwrap_dek("replica").await?;
        self.list("replica").await?;
        Ok(())
    }

    pub(super) async fn write_refused(&mut self) -> Result<(), StepFailed> {
        let before = self.stack.replica.stats().writes;
        let r = self.create("orders-root", 409, "none").await?;
        let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
        check(message.contains("read-only"), || {
            format!("the 409 does not explain the read-only state: {}", r.text())
        })?;
        check(
            r.header("failway-mode") == Some("failover_read_only"),
            || format!("failway-mode header: {:?}", r.header("failway-mode")),
        )?;
        self.n
            .ok("POST /api/v2/keys -> 409, answered by failway itself (failway-mode: failover_read_only)");
        self.n.detail(&format!("message: {message}"));
        check(self.stack.replica.stats().writes == before, || {
            "the refused write reached the replica".to_owned()
        })?;
        self.n.ok("nothing reached the replica");
        Ok(())
    }

    pub(super) async fn enable_writes(&mut self) -> Result<(), StepFailed> {
        self.n.detail(&format!(
            "failway ctl --admin {} enable-writes --reason \"{ENABLE_REASON}\"",
            self.stack.admin_url()
        ));
        let r = self
            .http
            .admin("enable-writes", ENABLE_REASON, false)
            .await?;
        expect(&r, 200, "none", "enable-writes")?;
        let v = r.json();
        check(v["mode"] == "failover_read_write", || {
            format!("enable-writes answered {}", r.text().trim())
        })?;
        self.n.ok(&format!(
            "POST /admin/enable-writes -> 200: {} -> {}",
            v["transition"]["from"].as_str().unwrap_or("-"),
            v["transition"]["to"].as_str().unwrap_or("-")
        ));
        Ok(())
    }

    pub(super) async fn replica_write(&mut self) -> Result<(), StepFailed> {
        let r = self.create("orders-root", 201, "replica").await?;
        self.incident_key = first_id(&r, "create")?;
        self.n.ok(&format!(
            "POST /api/v2/keys -> 201 from replica: key {}",
            self.incident_key
        ));
        let v = self.http.status().await?.json();
        check(v["replica_writes_latch"] == true, || {
            format!(
                "/status replica_writes_latch is {}",
                v["replica_writes_latch"]
            )
        })?;
        self.n.ok(
            "/status: replica_writes_latch = true (set and persisted before the write was sent)",
        );
        self.n
            .note("replication is one-way: this key will never reach the primary on its own");
        Ok(())
    }

    pub(super) async fn primary_returns(&mut self) -> Result<(), StepFailed> {
        self.n.detail(&format!(
            "curl -X POST {}/faults/clear",
            self.stack.primary_control_url()
        ));
        self.stack.primary.faults().clear();
        let (_, took) = self
            .wait_status("primary probed healthy", DETECT_WITHIN, |s| {
                s["regions"]["primary"]["health"] == "healthy"
            })
            .await?;
        self.n.ok(&format!(
            "the primary is probed healthy again after {:.1}s (2 good probes in a row)",
            took.as_secs_f64()
        ));
        Ok(())
    }

    pub(super) async fn failback_refused(&mut self) -> Result<(), StepFailed> {
        let wait = FAILBACK_AFTER + HEALTH_INTERVAL;
        self.n.say(&format!(
            "waiting {:.1}s, past failback_after = {FAILBACK_AFTER:?} (without the latch, failway would fail back now)",
            wait.as_secs_f64()
        ));
        tokio::time::sleep(wait).await;
        let v: Value = self.http.status().await?.json();
        check(
            v["mode"] == "failover_read_write" && v["failback_blocked"] == "replica_writes",
            || {
                format!(
                    "/status: mode {}, failback_blocked {}",
                    v["mode"], v["failback_blocked"]
                )
            },
        )?;
        self.n
            .ok("/status: still failover_read_write, failback_blocked = replica_writes");
        let r = self.http.admin("failback", FAILBACK_REASON, false).await?;
        expect(&r, 409, "none", "failback without force")?;
        self.n.ok("POST /admin/failback (no force) -> 409");
        self.n
            .detail(r.json()["error"].as_str().unwrap_or_default());
        Ok(())
    }

    pub(super) async fn forced_failback(&mut self) -> Result<(), StepFailed> {
        self.n.detail(&format!(
            "failway ctl --admin {} failback --force --reason \"{FAILBACK_REASON}\"",
            self.stack.admin_url()
        ));
        let r = self.http.admin("failback", FAILBACK_REASON, true).await?;
        expect(&r, 200, "none", "forced failback")?;
        let v = self.http.status().await?.json();
        check(
            v["mode"] == "primary" && v["replica_writes_latch"] == false,
            || {
                format!(
                    "/status after a forced failback: mode {}, latch {}",
                    v["mode"], v["replica_writes_latch"]
                )
            },
        )?;
        self.n
            .ok("POST /admin/failback {\"force\": true} -> 200: mode primary, latch cleared");
        Ok(())
    }

    pub(super) async fn final_read(&mut self) -> Result<(), StepFailed> {
        let ids = self.list("primary").await?;
        check(!ids.contains(&self.incident_key), || {
            format!(
                "the primary lists {}, a key written only on the replica",
                self.incident_key
            )
        })?;
        self.n.note(&format!(
            "key {} is not on the primary: it was written on the replica",
            self.incident_key
        ));
        self.unwrap_dek("primary").await
    }
}
