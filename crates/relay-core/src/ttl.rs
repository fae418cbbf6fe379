//! Which target items `TtlDeletes=skip` keeps on purpose.
//!
//! Under `skip` the applier does not replicate the deletes DynamoDB's TTL
//! process makes in the source: the target keeps those items (its own TTL,
//! if enabled, removes them). A comparison against the source must then
//! expect them: a target item with no source item is kept by the policy
//! when its TTL attribute says it has expired, as DynamoDB reads that
//! attribute (a Number of epoch seconds, not more than five years in the
//! past: older values are never deleted).
//!
//! **Invariant:** only an item the source's TTL could have deleted is
//! expected; any other extra item is a difference.

use crate::item::{AttributeValue, Attrs};

/// DynamoDB ignores TTL values more than five years in the past.
const FIVE_YEARS_S: i64 = 5 * 365 * 86_400;

/// Whether `item` (in the target, with no source item) is one the source's
/// TTL process may have deleted by AWS time `now_ms`, under the TTL
/// attribute `attr`.
pub fn expired(item: &Attrs, attr: &str, now_ms: i64) -> bool {
    let Some(AttributeValue::N(n)) = item.get(attr) else {
        return false;
    };
    // DynamoDB reads the number's whole seconds.
    let Some(s) = n
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite())
        .map(|s| s.trunc() as i64)
    else {
        return false;
    };
    let now_s = now_ms.div_euclid(1000);
    s <= now_s && s >= now_s - FIVE_YEARS_S
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(attr: &str, v: AttributeValue) -> Attrs {
        Attrs::from([
            ("pk".to_string(), AttributeValue::S("a".into())),
            (attr.to_string(), v),
        ])
    }

    #[test]
    fn only_an_item_whose_ttl_has_passed_and_counts_is_expired() {
        let now = 1_700_000_000_000;
        let n = |s: &str| AttributeValue::N(s.into());
        assert!(expired(&with("exp", n("1700000000")), "exp", now));
        assert!(expired(&with("exp", n("1699999999.9")), "exp", now));
        assert!(!expired(&with("exp", n("1700000001")), "exp", now));
        // Another attribute, another type, or too old for DynamoDB's TTL.
        assert!(!expired(&with("other", n("1")), "exp", now));
        assert!(!expired(
            &with("exp", AttributeValue::S("1".into())),
            "exp",
            now
        ));
        assert!(!expired(&with("exp", n("1")), "exp", now));
        assert!(expired(
            &with("exp", n(&(1_700_000_000 - FIVE_YEARS_S).to_string())),
            "exp",
            now
        ));
        assert!(!expired(&with("exp", n("NaN")), "exp", now));
    }
}
