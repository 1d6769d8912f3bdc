//! The rehearsal before the outage: a two-second drill moves reads to the
//! replica, refuses writes as a real read-only failover would, and fails
//! back by itself, which is how a team learns that the failover works
//! before it needs it.

use std::time::Duration;

use http::Method;
use serde_json::json;

use super::scenario::{check, expect, Incident, StepFailed};

const DRILL_REASON: &str = "rehearsal before the outage";
const DRILL_FOR: &str = "2s";
/// The drill's length, its failback and a probe's slack.
const DRILL_ENDS_WITHIN: Duration = Duration::from_secs(8);

impl Incident<'_> {
    pub(super) async fn drill(&mut self) -> Result<(), StepFailed> {
        self.n.detail(&format!(
            "failway ctl --admin {} drill --duration {DRILL_FOR} --reason \"{DRILL_REASON}\"",
            self.stack.admin_url()
        ));
        let body = json!({ "reason": DRILL_REASON, "duration": DRILL_FOR });
        let url = format!("{}/admin/drill", self.stack.admin_url());
        let r = self.http.send(Method::POST, url, &[], Some(body)).await?;
        expect(&r, 200, "none", "drill")?;
        let t = &r.json()["transition"];
        check(t["trigger"] == "drill", || {
            format!("the drill answered {}", r.text().trim())
        })?;
        self.n.ok(&format!(
            "POST /admin/drill -> 200: primary -> failover_read_only (trigger drill) for {DRILL_FOR}"
        ));
        self.unwrap_dek("replica").await?;
        let before = self.stack.replica.stats().writes;
        let r = self.create("rehearsal-key", 409, "none").await?;
        let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
        check(message.contains("drill"), || {
            format!("the 409 does not say it is a drill: {}", r.text())
        })?;
        check(self.stack.replica.stats().writes == before, || {
            "the refused write reached the replica".to_owned()
        })?;
        self.n
            .ok("POST /api/v2/keys -> 409 from failway: refused as in a real read-only failover");
        self.n.detail(&format!("message: {message}"));
        let (status, took) = self
            .wait_status("the drill's end", DRILL_ENDS_WITHIN, |s| {
                s["mode"] == "primary" && s["drill"].is_null()
            })
            .await?;
        let last = status["transitions"].as_array().and_then(|t| t.last());
        check(
            last.is_some_and(|t| t["trigger"] == "drill" && t["to"] == "primary"),
            || format!("the drill's last transition is {last:?}"),
        )?;
        self.n.ok(&format!(
            "the drill ended by itself {:.1}s later with a failback to primary (trigger drill)",
            took.as_secs_f64()
        ));
        self.unwrap_dek("primary").await
    }
}
