//! Whether the last verify counts for cutover (and for `finish`'s report).

use super::{duration_text, Status};

/// Whether the last verify counts for cutover (`Ok`, said) or not (`Err`,
/// why): on the table the seed wrote, clean since the last seed, begun
/// within the verdict's lifetime, and, when the source's stream was
/// replaced after the seed, begun after that.
pub fn verdict(status: &Status) -> Result<String, String> {
    if status.target_replaced {
        return Err(
            "the target table was replaced since the seed: its verify does not count".into(),
        );
    }
    if let (Some("clean"), Some(replaced)) =
        (status.last_verify.as_deref(), status.stream_replaced_ms)
    {
        verify_after_stream(status, replaced)?;
    }
    match (status.last_verify.as_deref(), status.last_verify_age_s) {
        (Some("clean"), Some(age)) if age < status.verdict_lifetime_s => Ok(format!(
            "clean since the last seed (began {} ago)",
            duration_text(age)
        )),
        (Some("clean"), Some(age)) => Err(format!(
            "the last clean verify began {} ago, longer than the DLQ and the stream failure queue keep a message less an hour ({}): a change that failed since could have expired from them unseen; run `ddb-relay verify` again",
            duration_text(age),
            duration_text(status.verdict_lifetime_s)
        )),
        (Some("clean"), None) => Err(
            "clean, but when that verify ran was not recorded (an older ddb-relay wrote it): run `ddb-relay verify` again".into(),
        ),
        (Some(v), _) => Err(v.to_string()),
        (None, _) => Err(
            "no clean full verify since the last seed: run `ddb-relay verify`".into(),
        ),
    }
}

/// Whether a clean verify began after the source's stream was replaced
/// (at `replaced`), which proves the target whatever the gap lost; with a
/// forwarder that starts at `LATEST` nothing does (it saw nothing before
/// its redeploy, whose time is not known here): only a re-seed.
pub fn verify_after_stream(status: &Status, replaced: i64) -> Result<(), String> {
    if status.forwarder_from_latest {
        return Err("the forwarder starts at LATEST, so it missed what changed before its redeploy onto the new stream: re-seed (`ddb-relay pause`, then `ddb-relay restart`)".into());
    }
    let after = status.last_verify.as_deref() == Some("clean")
        && status.verify_ms.is_some_and(|v| v > replaced);
    if after {
        Ok(())
    } else {
        Err("run `ddb-relay verify` (a clean verify begun after the new stream proves the target; `--repair` fixes what differs), or re-seed (`ddb-relay pause`, then `ddb-relay restart`)".into())
    }
}
