//! Backoff for retries inside an invocation's time budget.

/// Exponential backoff with full jitter: a delay in `[0, min(cap, base * 2^attempt)]`,
/// where `jitter` is a uniform sample in `[0, 1)`.
pub fn backoff_ms(attempt: u32, base_ms: u64, cap_ms: u64, jitter: f64) -> u64 {
    let ceiling = base_ms
        .saturating_mul(1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX))
        .min(cap_ms);
    (ceiling as f64 * jitter.clamp(0.0, 1.0)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff_ms(0, 50, 5_000, 1.0), 50);
        assert_eq!(backoff_ms(3, 50, 5_000, 1.0), 400);
        assert_eq!(backoff_ms(40, 50, 5_000, 1.0), 5_000);
        assert_eq!(backoff_ms(3, 50, 5_000, 0.0), 0);
        assert!(backoff_ms(3, 50, 5_000, 0.5) <= 200);
    }
}
