//! DynamoDB condition expressions from [`Cond`]: the expression, its
//! attribute names and its values, placeholders numbered apart.

use aws_sdk_dynamodb::types::AttributeValue as Av;

use super::Cond;
use crate::convert::to_sdk;

/// A condition as (expression, names, values).
pub(super) type Expr = (Option<String>, Vec<(String, String)>, Vec<(String, Av)>);

pub(super) fn condition(cond: &Cond) -> Expr {
    let mut names = Vec::new();
    let mut values = Vec::new();
    let expr = clause(cond, &mut names, &mut values);
    (expr, names, values)
}

/// One condition's expression, with placeholders numbered after those
/// already in `names` / `values`.
fn clause(
    cond: &Cond,
    names: &mut Vec<(String, String)>,
    values: &mut Vec<(String, Av)>,
) -> Option<String> {
    let mut name = |a: &String| {
        let n = format!("#c{}", names.len());
        names.push((n.clone(), a.clone()));
        n
    };
    match cond {
        Cond::Always => None,
        Cond::Absent(a) => Some(format!("attribute_not_exists({})", name(a))),
        Cond::Exists(a) => Some(format!("attribute_exists({})", name(a))),
        Cond::Equals(a, v) => {
            let n = name(a);
            let c = format!(":c{}", values.len());
            values.push((c.clone(), to_sdk(v)));
            Some(format!("{n} = {c}"))
        }
        Cond::All(all) => {
            let parts: Vec<String> = all
                .iter()
                .filter_map(|c| clause(c, names, values))
                .map(|p| format!("({p})"))
                .collect();
            (!parts.is_empty()).then(|| parts.join(" AND "))
        }
        // No part: never holds (as the fake's). One part that always
        // holds makes the whole hold, and the names and values of the
        // others are dropped with their text (DynamoDB refuses unused ones).
        Cond::Any(any) if any.is_empty() => {
            let n = name(&"ddb_relay_never".to_string());
            Some(format!(
                "attribute_exists({n}) AND attribute_not_exists({n})"
            ))
        }
        Cond::Any(any) => {
            let (n, v) = (names.len(), values.len());
            let parts = any
                .iter()
                .map(|c| clause(c, names, values).map(|p| format!("({p})")))
                .collect::<Option<Vec<String>>>();
            if parts.is_none() {
                names.truncate(n);
                values.truncate(v);
            }
            parts.map(|parts| parts.join(" OR "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::item::{AttributeValue, Attrs};

    #[test]
    fn nested_conditions_number_their_placeholders_apart() {
        let owner: Attrs = [
            ("pk".to_string(), AttributeValue::S("a".into())),
            ("sk".to_string(), AttributeValue::N("1".into())),
        ]
        .into();
        let (expr, names, values) = condition(&Cond::owned_by("id", &owner));
        assert_eq!(
            expr.as_deref(),
            Some("(attribute_exists(#c0)) AND (#c1 = :c0) AND (#c2 = :c1)")
        );
        let names: Vec<&str> = names.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["id", "pk", "sk"]);
        assert_eq!(values.len(), 2);
        assert_eq!(condition(&Cond::All(vec![])).0, None);
        let any = Cond::Any(vec![Cond::Absent("id".into()), Cond::Exists("p".into())]);
        let (expr, names, _) = condition(&any);
        assert_eq!(
            expr.as_deref(),
            Some("(attribute_not_exists(#c0)) OR (attribute_exists(#c1))")
        );
        assert_eq!(names.len(), 2);
        assert_eq!(
            condition(&Cond::Any(vec![Cond::Always, any.clone()])).0,
            None
        );
        let always = condition(&Cond::Any(vec![
            any,
            Cond::Equals("v".into(), AttributeValue::Null(true)),
            Cond::Always,
        ]));
        assert_eq!((always.0, always.1.len(), always.2.len()), (None, 0, 0));
        let never = condition(&Cond::All(vec![
            Cond::Exists("id".into()),
            Cond::Any(vec![]),
        ]));
        assert_eq!(
            never.0.as_deref(),
            Some(
                "(attribute_exists(#c0)) AND (attribute_exists(#c1) AND attribute_not_exists(#c1))"
            )
        );
        assert_eq!(condition(&Cond::Always).0, None);
    }
}
