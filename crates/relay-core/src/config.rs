//! Typed configuration, read once at cold start from environment variables.
//!
//! **Invariant:** a missing or invalid variable is an error that names the
//! variable and what it accepts. Only an optional variable falls back to its
//! documented default, when unset or set empty (the template passes an
//! empty parameter that way); a required one set empty is an error.

use std::str::FromStr;

use crate::apply::TtlPolicy;
use crate::pack::{PackConfig, MIN_MESSAGE_BYTES};
use crate::send_plan::BatchLimits;

/// A configuration problem, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {var} {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

fn err(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

/// Looks variables up (the environment in Lambda, a map in tests).
pub trait Env {
    fn get(&self, var: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn get(&self, var: &str) -> Option<String> {
        self(var)
    }
}

fn required(env: &dyn Env, var: &'static str) -> Result<String, ConfigError> {
    match env.get(var) {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        Some(_) => Err(err(var, "is set but empty")),
        None => Err(err(var, "is not set")),
    }
}

fn optional(env: &dyn Env, var: &'static str) -> Option<String> {
    env.get(var)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn number<T: FromStr + PartialOrd + std::fmt::Display + Copy>(
    env: &dyn Env,
    var: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    let Some(raw) = optional(env, var) else {
        return Ok(default);
    };
    let v: T = raw.parse().map_err(|_| {
        err(
            var,
            format!("must be a whole number from {min} to {max}, got {raw:?}"),
        )
    })?;
    if v < min || v > max {
        return Err(err(var, format!("must be from {min} to {max}, got {v}")));
    }
    Ok(v)
}

fn boolean(env: &dyn Env, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match optional(env, var)
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(err(var, format!("must be true or false, got {other:?}"))),
    }
}

/// Where metrics go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsMode {
    /// An EMF line on stdout (CloudWatch Logs extracts it).
    Emf,
    /// `PutMetricData` (emulators that do not extract EMF).
    PutMetricData,
    Both,
    Off,
}

/// Metrics settings shared by both functions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    pub mode: MetricsMode,
    pub namespace: String,
    pub migration: String,
}

/// Default number of FIFO groups; see BENCHMARKS.md for the trade-off.
pub const DEFAULT_BUCKETS: u32 = 32;
/// Default message cap: 256 KiB, which every SQS endpoint accepts. Raise to
/// 1 MiB (1048576) where the queue allows it.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// The hard SQS limit for one message and for one batch.
pub const SQS_MAX_BYTES: usize = 1024 * 1024;
/// Default message-body bytes the forwarder has in flight at once: two
/// full calls. Small messages are bounded by `SEND_CONCURRENCY` first; a
/// batch of more than 2 MiB of messages goes out in several waves instead
/// of one, and is not held twice more by the requests in flight
/// (BENCHMARKS.md, "Cold start and peak memory of the bootstraps"). A value
/// below `MAX_BATCH_BYTES` is allowed: full calls then go one at a time.
pub const DEFAULT_IN_FLIGHT_BYTES: usize = 2 * SQS_MAX_BYTES;

impl MetricsConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let mode = match optional(env, "METRICS_MODE")
            .map(|m| m.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("emf") => MetricsMode::Emf,
            Some("putmetricdata" | "put") => MetricsMode::PutMetricData,
            Some("both") => MetricsMode::Both,
            Some("off" | "none") => MetricsMode::Off,
            Some(other) => {
                return Err(err(
                    "METRICS_MODE",
                    format!("must be emf, putmetricdata, both or off, got {other:?}"),
                ))
            }
        };
        Ok(MetricsConfig {
            mode,
            namespace: optional(env, "METRICS_NAMESPACE").unwrap_or_else(|| "DdbRelay".into()),
            migration: required(env, "MIGRATION_ID")?,
        })
    }
}

/// The forwarder's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwarderConfig {
    pub queue_url: String,
    pub pack: PackConfig,
    pub limits: BatchLimits,
    /// Calls in flight at once.
    pub send_concurrency: usize,
    /// Message-body bytes in flight at once; a call larger than this goes
    /// alone (see [`crate::send_plan::Window`]).
    pub send_in_flight_bytes: usize,
    pub metrics: MetricsConfig,
}

impl ForwarderConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let max_message_bytes = number(
            env,
            "MAX_MESSAGE_BYTES",
            DEFAULT_MAX_MESSAGE_BYTES,
            MIN_MESSAGE_BYTES,
            SQS_MAX_BYTES,
        )?;
        let max_batch_bytes = number(
            env,
            "MAX_BATCH_BYTES",
            SQS_MAX_BYTES,
            MIN_MESSAGE_BYTES,
            SQS_MAX_BYTES,
        )?;
        if max_batch_bytes < max_message_bytes {
            return Err(err(
                "MAX_BATCH_BYTES",
                format!(
                    "({max_batch_bytes}) must be at least MAX_MESSAGE_BYTES ({max_message_bytes})"
                ),
            ));
        }
        Ok(ForwarderConfig {
            queue_url: required(env, "QUEUE_URL")?,
            pack: PackConfig {
                buckets: number(
                    env,
                    "GROUP_BUCKETS",
                    DEFAULT_BUCKETS,
                    1,
                    crate::group::MAX_BUCKETS,
                )?,
                max_message_bytes,
                forward_old_image: boolean(env, "FORWARD_OLD_IMAGE", true)?,
                old_key_sources: old_key_sources(env)?,
                // 1 while a stack may still roll back to a release that
                // reads only version 1 (crate::envelope).
                envelope_version: number(env, "ENVELOPE_VERSION", crate::envelope::VERSION, 1, 2)?,
            },
            limits: BatchLimits {
                max_entries: 10,
                max_batch_bytes,
                max_attempts: number(env, "SEND_MAX_ATTEMPTS", 6, 1, 100)?,
            },
            send_concurrency: number(env, "SEND_CONCURRENCY", 8, 1, 64)?,
            send_in_flight_bytes: number(
                env,
                "SEND_IN_FLIGHT_BYTES",
                DEFAULT_IN_FLIGHT_BYTES,
                MIN_MESSAGE_BYTES,
                64 * SQS_MAX_BYTES,
            )?,
            metrics: MetricsConfig::from_env(env)?,
        })
    }
}

/// What a key-changing transform needs from old images: `KEY_SOURCES`
/// (comma-separated, for a custom transform) or the key sources of the
/// declarative `TRANSFORM` (the same spec as the applier's). Empty when the
/// target key comes from the source keys, which every event carries.
fn old_key_sources(env: &dyn Env) -> Result<std::collections::BTreeSet<String>, ConfigError> {
    if let Some(list) = optional(env, "KEY_SOURCES") {
        return Ok(list
            .split(',')
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect());
    }
    match optional(env, "TRANSFORM") {
        None => Ok(Default::default()),
        Some(t) => {
            use crate::transform::Transform;
            let d = crate::transform::Declarative::parse(&t, &[])
                .map_err(|e| err("TRANSFORM", e.to_string()))?;
            Ok(if d.is_identity_key() {
                Default::default()
            } else {
                d.key_sources()
            })
        }
    }
}

/// The applier's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplierConfig {
    pub target_table: String,
    /// Read (consistently) for refetch markers.
    pub source_table: String,
    pub control_table: String,
    pub ttl_policy: TtlPolicy,
    /// BatchWriteItem calls in flight at once.
    pub write_concurrency: usize,
    pub metrics: MetricsConfig,
    /// A declarative transform (JSON or YAML), validated at cold start.
    pub transform: Option<String>,
    /// The target's region and account, when not the function's own.
    pub target: crate::place::TargetPlace,
}

impl ApplierConfig {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let ttl_policy = match optional(env, "TTL_DELETES")
            .map(|m| m.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("replicate") => TtlPolicy::Replicate,
            Some("skip") => TtlPolicy::Skip,
            Some(other) => {
                return Err(err(
                    "TTL_DELETES",
                    format!("must be replicate or skip, got {other:?}"),
                ))
            }
        };
        Ok(ApplierConfig {
            target_table: required(env, "TARGET_TABLE")?,
            source_table: required(env, "SOURCE_TABLE")?,
            control_table: required(env, "CONTROL_TABLE")?,
            target: crate::place::TargetPlace::from_env(env)?,
            ttl_policy,
            write_concurrency: number(env, "WRITE_CONCURRENCY", 4, 1, 64)?,
            metrics: MetricsConfig::from_env(env)?,
            transform: match optional(env, "TRANSFORM") {
                Some(t) if !t.trim().is_empty() => {
                    crate::transform::Declarative::parse(&t, &[])
                        .map_err(|e| err("TRANSFORM", e.to_string()))?;
                    Some(t)
                }
                _ => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn forwarder_defaults() {
        let c =
            ForwarderConfig::from_env(&env(&[("QUEUE_URL", "q"), ("MIGRATION_ID", "m")])).unwrap();
        assert_eq!(c.pack.buckets, DEFAULT_BUCKETS);
        assert_eq!(c.pack.max_message_bytes, 256 * 1024);
        assert!(c.pack.forward_old_image);
        assert_eq!(c.metrics.mode, MetricsMode::Emf);
        assert!(c.pack.old_key_sources.is_empty());
        assert_eq!(c.send_concurrency, 8);
        assert_eq!(c.send_in_flight_bytes, 2 * 1024 * 1024);
        // Below one smallest message is refused, by name.
        let e = forwarder_refuses(("SEND_IN_FLIGHT_BYTES", "10"));
        assert_eq!(e.var, "SEND_IN_FLIGHT_BYTES");
        // Version 2 by default, 1 on demand, nothing else.
        assert_eq!(c.pack.envelope_version, 2);
        let v1 = ForwarderConfig::from_env(&env(&[
            ("QUEUE_URL", "q"),
            ("MIGRATION_ID", "m"),
            ("ENVELOPE_VERSION", "1"),
        ]))
        .unwrap();
        assert_eq!(v1.pack.envelope_version, 1);
        for bad in ["0", "3", "v2"] {
            assert_eq!(
                forwarder_refuses(("ENVELOPE_VERSION", bad)).var,
                "ENVELOPE_VERSION"
            );
        }
    }

    /// The error for the forwarder's required settings plus `extra`.
    fn forwarder_refuses(extra: (&str, &str)) -> ConfigError {
        ForwarderConfig::from_env(&env(&[("QUEUE_URL", "q"), ("MIGRATION_ID", "m"), extra]))
            .unwrap_err()
    }

    #[test]
    fn the_forwarder_keeps_the_key_sources_of_the_transform() {
        let base = [("QUEUE_URL", "q"), ("MIGRATION_ID", "m")];
        let with = |extra: (&'static str, &'static str)| {
            let mut v = base.to_vec();
            v.push(extra);
            ForwarderConfig::from_env(&env(&v))
        };
        let c = with((
            "TRANSFORM",
            r#"{"key":[{"attribute":"id","uuidv5":{"from":["Email"]}}]}"#,
        ))
        .unwrap();
        assert_eq!(c.pack.old_key_sources, ["Email".to_string()].into());
        let c = with(("TRANSFORM", r#"{"rename":{"a":"b"}}"#)).unwrap();
        assert!(c.pack.old_key_sources.is_empty());
        let c = with(("KEY_SOURCES", "Email, Region")).unwrap();
        assert_eq!(
            c.pack.old_key_sources,
            ["Email".to_string(), "Region".to_string()].into()
        );
        assert_eq!(with(("TRANSFORM", "{")).unwrap_err().var, "TRANSFORM");
    }

    #[test]
    fn errors_name_the_variable() {
        let e = ForwarderConfig::from_env(&env(&[("MIGRATION_ID", "m")])).unwrap_err();
        assert_eq!(e.var, "QUEUE_URL");
        assert_eq!(e.to_string(), "configuration: QUEUE_URL is not set");
        let e = forwarder_refuses(("GROUP_BUCKETS", "many"));
        assert_eq!(e.var, "GROUP_BUCKETS");
        assert!(e.problem.contains("\"many\""));
        let e = forwarder_refuses(("MAX_MESSAGE_BYTES", "2000000"));
        assert_eq!(e.var, "MAX_MESSAGE_BYTES");
        let e = ApplierConfig::from_env(&env(&[
            ("TARGET_TABLE", "t"),
            ("SOURCE_TABLE", "s"),
            ("CONTROL_TABLE", "c"),
            ("MIGRATION_ID", "m"),
            ("TTL_DELETES", "sometimes"),
        ]))
        .unwrap_err();
        assert_eq!(e.var, "TTL_DELETES");
        let e = ApplierConfig::from_env(&env(&[
            ("TARGET_TABLE", "t"),
            ("SOURCE_TABLE", "s"),
            ("CONTROL_TABLE", " "),
            ("MIGRATION_ID", "m"),
        ]))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration: CONTROL_TABLE is set but empty"
        );
    }

    #[test]
    fn applier_reads_its_settings() {
        let c = ApplierConfig::from_env(&env(&[
            ("TARGET_TABLE", "t"),
            ("SOURCE_TABLE", "s"),
            ("CONTROL_TABLE", "c"),
            ("MIGRATION_ID", "m"),
            ("TTL_DELETES", "skip"),
            ("METRICS_MODE", "both"),
        ]))
        .unwrap();
        assert_eq!(c.ttl_policy, TtlPolicy::Skip);
        assert_eq!(c.metrics.mode, MetricsMode::Both);
    }
}
