//! Bounds on the shape of what a client may store: how deep its JSON fields nest and how long its
//! notification lists are.
//!
//! Why: a stored job is read back inside larger documents (the job record, its BSON copy, the
//! views), so a field nested just under serde's recursion limit at enqueue would make the stored
//! row unreadable later. Bounding the depth well below that limit keeps every row we write
//! readable; bounding the lists keeps one execution's notifications finite.

use serde_json::Value;

/// The deepest a client's free-form field (`metadata`, `envs`, `webhooks`, `notify`) may nest;
/// `{"a": 1}` is one level, `{"a": [1]}` two.
pub const MAX_NESTING_DEPTH: usize = 32;

/// The most webhooks one outcome list (`webhooks.succeeds`, …) may hold.
pub const MAX_WEBHOOKS_PER_LIST: usize = 20;

/// The most e-mail recipients one outcome list (`notify.fails`, …) may hold.
pub const MAX_RECIPIENTS_PER_LIST: usize = 50;

/// Whether `value` nests deeper than `limit` objects and arrays.
///
/// Iterative, with an explicit stack, so that no input can overflow the thread's stack here; it
/// stops at the first path deeper than `limit`.
pub fn nests_deeper_than(value: &Value, limit: usize) -> bool {
    let mut pending: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, depth)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        let depth = depth + 1;
        if depth > limit {
            return true;
        }
        pending.extend(children.map(|child| (child, depth)));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        let mut value = json!(1);
        for _ in 0..levels {
            value = json!({ "a": [value] });
        }
        value
    }

    #[test]
    fn counts_objects_and_arrays_as_levels() {
        assert!(!nests_deeper_than(&json!(1), 0));
        assert!(nests_deeper_than(&json!({}), 0));
        assert!(!nests_deeper_than(&json!({"a": 1}), 1));
        assert!(nests_deeper_than(&json!({"a": [1]}), 1));
        assert!(!nests_deeper_than(&nested(16), 32));
        assert!(nests_deeper_than(&nested(17), 32));
    }

    #[test]
    fn measures_values_deeper_than_serde_parses_without_recursion() {
        // Built by hand: 100 000 levels would overflow a recursive walk.
        let mut value = json!(null);
        for _ in 0..100_000 {
            value = Value::Array(vec![value]);
        }
        assert!(nests_deeper_than(&value, MAX_NESTING_DEPTH));
        // serde_json drops values recursively: take it apart from the outside in.
        while let Value::Array(mut items) = value {
            value = items.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn enqueue_refuses_deep_fields_and_long_lists() {
        let error = |body: &str| {
            crate::payload::parse_enqueue(body.as_bytes())
                .unwrap_err()
                .0
        };
        let deep = |levels: usize| "[".repeat(levels) + &"]".repeat(levels);
        for field in ["metadata", "envs", "webhooks", "notify"] {
            let body = format!(
                r#"{{"image": "a", "command": "x", "{field}": {}}}"#,
                deep(33)
            );
            assert_eq!(
                error(&body),
                format!("'{field}' is nested more than 32 levels deep.")
            );
        }
        // Just under serde's own limit: still a clear refusal, not a parse error.
        let body = format!(
            r#"{{"image": "a", "command": "x", "metadata": {}}}"#,
            deep(126)
        );
        assert!(error(&body).starts_with("'metadata' is nested"));
        let hooks = vec![r#"{"url": "http://x/"}"#; 21].join(",");
        assert_eq!(
            error(&format!(
                r#"{{"image": "a", "command": "x", "webhooks": {{"fails": [{hooks}]}}}}"#
            )),
            "'webhooks.fails' has more than 20 webhooks."
        );
        let emails = vec![r#""a@b.c""#; 51].join(",");
        assert_eq!(
            error(&format!(
                r#"{{"image": "a", "command": "x", "notify": {{"succeeds": [{emails}]}}}}"#
            )),
            "'notify.succeeds' has more than 50 recipients."
        );
    }
}
