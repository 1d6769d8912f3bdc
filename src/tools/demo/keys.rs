//! Before the outage: a root key imported into both regions with the same
//! material (the duplicated-key recipe, another alias on the replica) is
//! interchangeable; rotated on the primary with new material and not on
//! the replica, failway reports the pair out of step (`unwrap_refused`)
//! while nothing has failed yet; rotated on the replica with the same
//! material, the pair is in step again.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::Method;
use serde_json::{json, Value};

use super::scenario::{check, expect, Incident, StepFailed};

/// The `[[key_pairs]]` entry of the demo configuration: aliases, so the
/// configuration can name keys the step creates.
pub const PAIR: &str = "demo-dup-root";
pub const PRIMARY_ALIAS: &str = "demo-dup-root";
pub const REPLICA_ALIAS: &str = "demo-dup-root-copy";

/// Demo key material (not secret: it exists only in the simulators).
const FIRST: [u8; 32] = [0x5a; 32];
const ROTATED: [u8; 32] = [0xa5; 32];

fn import_body(alias: &str) -> Value {
    json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": PAIR,
            "extractable": false, "payload": STANDARD.encode(FIRST), "aliases": [alias]}]
    })
}

fn rotate_body() -> Value {
    json!({ "payload": STANDARD.encode(ROTATED) })
}

impl Incident<'_> {
    pub(super) async fn keys_out_of_step(&mut self) -> Result<(), StepFailed> {
        let body = Some(import_body(PRIMARY_ALIAS));
        let r = self.http.kp(Method::POST, "/api/v2/keys", body).await?;
        expect(&r, 201, "primary", "import the root key on the primary")?;
        self.replica_call("/api/v2/keys", import_body(REPLICA_ALIAS))
            .await?;
        self.n.ok(&format!(
            "root key imported on both regions with the same material ({PRIMARY_ALIAS}, {REPLICA_ALIAS})"
        ));
        self.verify("ok").await?;
        let path = format!("/api/v2/keys/{PRIMARY_ALIAS}/actions/rotate");
        let r = self
            .http
            .kp(Method::POST, &path, Some(rotate_body()))
            .await?;
        expect(&r, 204, "primary", "rotate the primary's key")?;
        self.n
            .ok("rotated on the primary with new material; the replica's copy was forgotten");
        let pair = self.verify("unwrap_refused").await?;
        self.n.detail(&format!(
            "{} {}: every key wrapped from now on could not be unwrapped after a failover",
            pair["http_status"],
            pair["error_code"].as_str().unwrap_or("-")
        ));
        let path = format!("/api/v2/keys/{REPLICA_ALIAS}/actions/rotate");
        self.replica_call(&path, rotate_body()).await?;
        self.n.ok("the copy rotated with the same material");
        self.verify("ok").await.map(|_| ())
    }

    /// A call straight to the replica region (as its operators would).
    async fn replica_call(&self, path: &str, body: Value) -> Result<(), StepFailed> {
        let url = format!("http://{}{path}", self.stack.replica.addr());
        let auth = format!("Bearer {}", super::stack::DEMO_TOKEN);
        let headers = [
            ("bluemix-instance", self.stack.instance.as_str()),
            ("authorization", auth.as_str()),
            ("prefer", "return=representation"),
        ];
        let r = self
            .http
            .send(Method::POST, url, &headers, Some(body))
            .await?;
        check((200..300).contains(&r.status), || {
            format!(
                "{path} on the replica answered {}: {}",
                r.status,
                r.text().trim()
            )
        })
    }

    /// `failway ctl keys verify`: the pair's result must be `want`.
    async fn verify(&self, want: &str) -> Result<Value, StepFailed> {
        self.n.detail(&format!(
            "failway ctl --admin {} keys verify",
            self.stack.admin_url()
        ));
        let url = format!("{}/admin/keys/verify", self.stack.admin_url());
        let r = self
            .http
            .send(Method::POST, url, &[], Some(json!({})))
            .await?;
        expect(&r, 200, "none", "keys verify")?;
        let pair = r.json()["key_pairs"][0].clone();
        check(pair["result"] == want, || {
            format!("keys verify: expected {want}, got {pair}")
        })?;
        let said = match want {
            "ok" => "interchangeable".to_owned(),
            other => format!("OUT OF STEP ({other})"),
        };
        let version = |side: &str| pair["versions"][side].as_str().unwrap_or("-").to_owned();
        self.n.ok(&format!(
            "pair {PAIR}: {said}; key versions primary {} replica {}",
            version("primary"),
            version("replica")
        ));
        Ok(pair)
    }
}
