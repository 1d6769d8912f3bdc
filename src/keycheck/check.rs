//! One check of one pair: a fresh random 32-byte plaintext and a random
//! `aad`, wrapped by the primary's key and unwrapped by the replica's in
//! the replica's instance, compared; then the other way round; then each
//! side's key metadata for the versions `/status` shows. A region the
//! service already judges down is skipped (`region_down`).
//!
//! The plaintext, the ciphertext and the token stay in this function's
//! locals: reports and logs carry only statuses, reason codes and version ids.

use std::time::{Duration, SystemTime};

use http::HeaderValue;
use ring::rand::SecureRandom;

use super::exchange::{Answer, Side};
use super::outcome::{judge, worse, Call, CheckResult};
use crate::config::KeyPairConfig;
use crate::health::probe::TokenFile;
use crate::region::Region;

/// What the last check of a pair found.
#[derive(Debug, Clone)]
pub struct PairReport {
    pub pair: String,
    pub at: SystemTime,
    pub result: CheckResult,
    /// One line for people, without secrets.
    pub detail: String,
    /// The answer that explained a result other than ok.
    pub http_status: Option<u16>,
    pub error_code: Option<String>,
    pub region: Option<Region>,
    /// Each side's current key version (`keyVersion.id` of its metadata).
    pub versions: [Option<String>; 2],
}

/// What one direction found (the result aside).
#[derive(Debug, Default)]
struct Finding {
    detail: String,
    http_status: Option<u16>,
    error_code: Option<String>,
    region: Option<Region>,
}

impl Finding {
    fn of(region: Region, answer: &Answer, detail: String) -> Finding {
        Finding {
            detail,
            http_status: Some(answer.status),
            error_code: answer.error_code(),
            region: Some(region),
        }
    }

    fn unreachable(region: Region) -> Finding {
        Finding {
            detail: format!("{} did not answer: not checked", region.as_str()),
            region: Some(region),
            ..Finding::default()
        }
    }
}

type Step = (CheckResult, Finding);

/// The regions and the token a service's checks use.
pub struct Checker {
    pub sides: [Side; 2],
    pub token: Option<TokenFile>,
    pub timeout: Duration,
    /// Whether the service judges a region down now.
    pub down: Box<dyn Fn(Region) -> bool + Send + Sync>,
}

fn key_of(pair: &KeyPairConfig, r: Region) -> &str {
    match r {
        Region::Primary => &pair.primary,
        Region::Replica => &pair.replica,
    }
}

fn other(r: Region) -> Region {
    match r {
        Region::Primary => Region::Replica,
        Region::Replica => Region::Primary,
    }
}

impl Checker {
    pub async fn check(&self, pair: &KeyPairConfig) -> PairReport {
        let (result, finding) = self.both_ways(pair).await;
        let mut versions = [None, None];
        if result != CheckResult::RegionDown {
            let auth = self.token.as_ref().and_then(|t| t.value().ok());
            for r in Region::ALL {
                let side = &self.sides[r.index()];
                if let Ok(a) = side
                    .metadata(key_of(pair, r), auth.as_ref(), self.timeout)
                    .await
                {
                    versions[r.index()] = a.key_version();
                }
            }
        }
        PairReport {
            pair: pair.name.clone(),
            at: SystemTime::now(),
            result,
            detail: finding.detail,
            http_status: finding.http_status,
            error_code: finding.error_code,
            region: finding.region,
            versions,
        }
    }

    async fn both_ways(&self, pair: &KeyPairConfig) -> Step {
        if let Some(r) = Region::ALL.into_iter().find(|r| (self.down)(*r)) {
            let detail = format!("{} is down: not checked", r.as_str());
            return (
                CheckResult::RegionDown,
                Finding {
                    detail,
                    region: Some(r),
                    ..Finding::default()
                },
            );
        }
        let auth = match &self.token {
            None => None,
            Some(t) => match t.value() {
                Ok(v) => Some(v),
                Err(e) => {
                    return (
                        CheckResult::AuthError,
                        Finding {
                            detail: e,
                            ..Default::default()
                        },
                    )
                }
            },
        };
        let first = self.direction(pair, Region::Primary, auth.as_ref()).await;
        if first.0 == CheckResult::RegionDown {
            return first;
        }
        let second = self.direction(pair, Region::Replica, auth.as_ref()).await;
        let (result, mut finding) = worse(first, second);
        if result == CheckResult::Ok {
            finding.detail = "each key unwrapped what the other wrapped".to_owned();
        }
        (result, finding)
    }

    /// `from` wraps, the other region unwraps.
    async fn direction(
        &self,
        pair: &KeyPairConfig,
        from: Region,
        auth: Option<&HeaderValue>,
    ) -> Step {
        let to = other(from);
        let (plaintext, aad) = match fresh_secret() {
            Some(s) => s,
            None => {
                let detail = "no random bytes for the check".to_owned();
                return (
                    CheckResult::RegionDown,
                    Finding {
                        detail,
                        ..Default::default()
                    },
                );
            }
        };
        let wrapper = &self.sides[from.index()];
        let wrapped = match wrapper
            .wrap(key_of(pair, from), auth, &plaintext, &aad, self.timeout)
            .await
        {
            Ok(a) => a,
            Err(_) => return (CheckResult::RegionDown, Finding::unreachable(from)),
        };
        if let Some(bad) = judge(Call::Wrap, wrapped.status) {
            let detail = format!("{} refused to wrap ({})", from.as_str(), wrapped.status);
            return (bad, Finding::of(from, &wrapped, detail));
        }
        let Some(ciphertext) = wrapped.bytes_field("ciphertext") else {
            let detail = format!("{} answered a wrap without a ciphertext", from.as_str());
            return (CheckResult::KeyMissing, Finding::of(from, &wrapped, detail));
        };
        let unwrapper = &self.sides[to.index()];
        let unwrapped = match unwrapper
            .unwrap(key_of(pair, to), auth, &ciphertext, &aad, self.timeout)
            .await
        {
            Ok(a) => a,
            Err(_) => return (CheckResult::RegionDown, Finding::unreachable(to)),
        };
        if let Some(bad) = judge(Call::Unwrap, unwrapped.status) {
            let detail = format!(
                "{} refused to unwrap what {} wrapped ({})",
                to.as_str(),
                from.as_str(),
                unwrapped.status
            );
            return (bad, Finding::of(to, &unwrapped, detail));
        }
        if unwrapped.bytes_field("plaintext").as_deref() != Some(&plaintext[..]) {
            let detail = format!(
                "{} unwrapped what {} wrapped to other bytes",
                to.as_str(),
                from.as_str()
            );
            return (CheckResult::Mismatch, Finding::of(to, &unwrapped, detail));
        }
        (CheckResult::Ok, Finding::default())
    }
}

/// A random 32-byte plaintext and a random `aad` (hex).
fn fresh_secret() -> Option<([u8; 32], String)> {
    let rng = ring::rand::SystemRandom::new();
    let mut plaintext = [0u8; 32];
    let mut aad = [0u8; 16];
    rng.fill(&mut plaintext).ok()?;
    rng.fill(&mut aad).ok()?;
    let aad = aad.iter().map(|b| format!("{b:02x}")).collect();
    Some((plaintext, aad))
}
