//! Pure judgement of one key-pair check: what an answer of Key Protect
//! means for the pair (`judge`), and which finding of the two directions
//! the pair reports (`worse`). No I/O, no clock.

/// A check's result: the `result` label of
/// `failway_key_pair_checks_total` and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    /// Each side unwrapped what the other wrapped, to the same plaintext.
    Ok,
    /// An unwrap succeeded but gave other bytes than were wrapped.
    Mismatch,
    /// A side refused to unwrap the other's ciphertext (e.g. 422
    /// `UNPROCESSABLE_CIPHERTEXT_ERR`: it lacks that version's material).
    UnwrapRefused,
    /// A key cannot be used: absent, deleted, disabled or not a root key.
    KeyMissing,
    /// The token was refused (401/403): nothing is known about the keys.
    AuthError,
    /// A region is down or answered 5xx/429: skipped, nothing is known.
    RegionDown,
}

impl CheckResult {
    pub const ALL: [CheckResult; 6] = [
        CheckResult::Ok,
        CheckResult::Mismatch,
        CheckResult::UnwrapRefused,
        CheckResult::KeyMissing,
        CheckResult::AuthError,
        CheckResult::RegionDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Ok => "ok",
            CheckResult::Mismatch => "mismatch",
            CheckResult::UnwrapRefused => "unwrap_refused",
            CheckResult::KeyMissing => "key_missing",
            CheckResult::AuthError => "auth_error",
            CheckResult::RegionDown => "region_down",
        }
    }

    /// The value of `failway_key_pair_interchangeable`, when the result
    /// says anything about the keys (a refused token or a region down
    /// leaves the last value standing).
    pub fn interchangeable(self) -> Option<bool> {
        match self {
            CheckResult::Ok => Some(true),
            CheckResult::Mismatch | CheckResult::UnwrapRefused | CheckResult::KeyMissing => {
                Some(false)
            }
            CheckResult::AuthError | CheckResult::RegionDown => None,
        }
    }

    /// How much a finding weighs when the two directions disagree: a
    /// finding about the keys beats "could not tell", which beats ok.
    fn weight(self) -> u8 {
        match self {
            CheckResult::Ok => 0,
            CheckResult::RegionDown => 1,
            _ => 2,
        }
    }
}

/// Which call of the check an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Wrap,
    Unwrap,
}

/// What a non-2xx answer to `call` means; `None` for a success.
pub fn judge(call: Call, status: u16) -> Option<CheckResult> {
    Some(match status {
        200..=299 => return None,
        401 | 403 => CheckResult::AuthError,
        404 | 410 => CheckResult::KeyMissing,
        408 | 429 | 500..=599 => CheckResult::RegionDown,
        // Any other refusal of a ciphertext the peer just made means the
        // two keys do not hold the same versions.
        _ if call == Call::Unwrap => CheckResult::UnwrapRefused,
        // A key that cannot wrap (disabled, not a root key) is of no use.
        _ => CheckResult::KeyMissing,
    })
}

/// The finding the pair reports of two: the heavier, the first on a tie.
pub fn worse<T>(a: (CheckResult, T), b: (CheckResult, T)) -> (CheckResult, T) {
    if b.0.weight() > a.0.weight() {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_without_the_version_is_a_refused_unwrap_not_a_missing_key() {
        assert_eq!(judge(Call::Unwrap, 422), Some(CheckResult::UnwrapRefused));
        assert_eq!(judge(Call::Unwrap, 400), Some(CheckResult::UnwrapRefused));
        assert_eq!(judge(Call::Wrap, 422), Some(CheckResult::KeyMissing));
        assert_eq!(judge(Call::Unwrap, 404), Some(CheckResult::KeyMissing));
        assert_eq!(judge(Call::Wrap, 200), None);
    }

    #[test]
    fn refused_tokens_and_server_faults_say_nothing_about_the_keys() {
        for (status, want) in [
            (401, CheckResult::AuthError),
            (403, CheckResult::AuthError),
            (503, CheckResult::RegionDown),
            (429, CheckResult::RegionDown),
        ] {
            let got = judge(Call::Unwrap, status).unwrap();
            assert_eq!(got, want, "{status}");
            assert_eq!(got.interchangeable(), None);
        }
        assert_eq!(CheckResult::UnwrapRefused.interchangeable(), Some(false));
        assert_eq!(CheckResult::Ok.interchangeable(), Some(true));
    }

    #[test]
    fn a_finding_about_the_keys_outweighs_a_region_down_and_ok() {
        use CheckResult::*;
        assert_eq!(worse((Ok, 1), (UnwrapRefused, 2)), (UnwrapRefused, 2));
        assert_eq!(worse((RegionDown, 1), (Mismatch, 2)), (Mismatch, 2));
        assert_eq!(worse((Ok, 1), (RegionDown, 2)), (RegionDown, 2));
        assert_eq!(worse((KeyMissing, 1), (UnwrapRefused, 2)), (KeyMissing, 1));
    }
}
