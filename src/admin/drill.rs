//! `POST /admin/drill {"service", "reason", "duration"}` and
//! `POST /admin/drill/stop {"service", "reason"}`: the body checks that are
//! the admin API's (a duration that parses, not over `failover.max_drill`);
//! whether a drill may start is the machine's to say (409).

use std::time::Duration;

use crate::failover::machine::Command;

/// The command a drill request asks for, or what is wrong with its body.
pub(super) fn command(
    stop: bool,
    duration: Option<String>,
    force: bool,
    max: Duration,
    reason: String,
) -> Result<Command, String> {
    if force {
        return Err("force: a drill takes no force".to_owned());
    }
    if stop {
        if duration.is_some() {
            return Err("duration: /admin/drill/stop takes no duration".to_owned());
        }
        return Ok(Command::StopDrill { reason });
    }
    let Some(raw) = duration else {
        return Err("duration: required, how long the drill lasts (e.g. \"10m\")".to_owned());
    };
    let duration = humantime::parse_duration(raw.trim()).map_err(|_| {
        format!("duration: {raw:?} is not a duration (e.g. \"2s\", \"10m\", \"1h\")")
    })?;
    if duration > max {
        return Err(format!(
            "duration: {} is longer than failover.max_drill ({})",
            humantime::format_duration(duration),
            humantime::format_duration(max)
        ));
    }
    Ok(Command::Drill {
        duration,
        reason,
        // Named by the caller's token, in `actions::run`.
        by: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn drill(duration: Option<&str>) -> Result<Command, String> {
        command(false, duration.map(str::to_owned), false, HOUR, "r".into())
    }

    #[test]
    fn a_drill_needs_a_duration_within_max_drill() {
        assert_eq!(
            drill(Some("2s")).unwrap(),
            Command::Drill {
                duration: Duration::from_secs(2),
                reason: "r".into(),
                by: None
            }
        );
        assert!(drill(None).unwrap_err().starts_with("duration: required"));
        let soon = drill(Some("soon")).unwrap_err();
        assert!(soon.contains("\"soon\" is not a duration"), "{soon}");
        let long = drill(Some("2h")).unwrap_err();
        assert_eq!(long, "duration: 2h is longer than failover.max_drill (1h)");
        assert!(drill(Some("1h")).is_ok());
    }

    #[test]
    fn stop_takes_neither_duration_nor_force() {
        let stop =
            |d: Option<&str>, force| command(true, d.map(str::to_owned), force, HOUR, "r".into());
        assert_eq!(
            stop(None, false).unwrap(),
            Command::StopDrill { reason: "r".into() }
        );
        assert!(stop(Some("1s"), false)
            .unwrap_err()
            .starts_with("duration:"));
        assert!(stop(None, true).unwrap_err().starts_with("force:"));
    }
}
