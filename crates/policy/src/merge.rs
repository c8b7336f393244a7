//! Merging of policy `default` objects.

use serde_json::Value;

/// Merges `over` into `base` the way Kuma merges policy confs: objects merge
/// key by key, recursively; anything else (scalars, lists) is replaced; an
/// explicit `null` leaves the base value alone.
pub fn merge_json(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    continue;
                }
                match b.get_mut(k) {
                    Some(existing) => merge_json(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) if !o.is_null() => *b = o.clone(),
        _ => {}
    }
}
