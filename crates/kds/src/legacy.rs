//! Kuma's protobuf ("legacy") kinds on the wire.
//!
//! Kuma carries a resource's spec in `google.protobuf.Any`: its new-style
//! kinds (policies, MeshService…) as JSON with an empty type URL, its older
//! kinds as the protobuf message itself (`type.googleapis.com/<message>`).
//! Our store keeps every spec as Kuma's protojson, so for the kinds listed in
//! [`message_name`] this module converts that JSON to the protobuf message
//! and back, through prost-reflect and the schemas under `proto/kuma/`
//! (same packages, names and field numbers as Kuma's).
//!
//! JSON rendering follows protojson as Kuma's REST API shows it: camelCase
//! names, default values left out, 64-bit integers as strings, RFC 3339
//! timestamps. Two choices keep our own content unchanged through a round
//! trip: durations use the fewest fractional digits (`1.5s`, where Go writes
//! `1.500s`), and whole numbers inside `google.protobuf.Struct` come back as
//! integers (Struct only has doubles).

use envoy_types::pb::google::protobuf::Any;
use kuma_model::ResourceKind;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::Value;
use std::sync::LazyLock;

/// `type.googleapis.com/` followed by a message's full name.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// Encoded `FileDescriptorSet` of `proto/kuma/**`, written by build.rs.
static FDS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kuma_legacy.fds"));

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    // build.rs compiled these files itself; a failure is a build defect.
    DescriptorPool::decode(FDS).expect("proto/kuma descriptors compiled by build.rs")
});

/// Kuma's protobuf message for a kind that travels as protobuf, or `None`
/// for kinds whose spec travels as JSON.
pub fn message_name(kind: ResourceKind) -> Option<&'static str> {
    Some(match kind {
        ResourceKind::Mesh => "kuma.mesh.v1alpha1.Mesh",
        ResourceKind::Dataplane => "kuma.mesh.v1alpha1.Dataplane",
        ResourceKind::DataplaneInsight => "kuma.mesh.v1alpha1.DataplaneInsight",
        ResourceKind::ServiceInsight => "kuma.mesh.v1alpha1.ServiceInsight",
        ResourceKind::Secret | ResourceKind::GlobalSecret => "kuma.system.v1alpha1.Secret",
        _ => return None,
    })
}

/// The `Any` type URL a kind's spec travels under, when it is protobuf.
pub fn type_url(kind: ResourceKind) -> Option<String> {
    message_name(kind).map(|m| format!("{TYPE_URL_PREFIX}{m}"))
}

fn descriptor(kind: ResourceKind) -> Option<MessageDescriptor> {
    message_name(kind).and_then(|m| POOL.get_message_by_name(m))
}

/// The spec of a protobuf kind as Kuma's `Any`; `None` for JSON kinds.
/// `Err` says why this JSON has no protobuf form (a field Kuma's message
/// does not have, a value of the wrong type).
pub fn encode(kind: ResourceKind, spec: &Value) -> Option<Result<Any, String>> {
    let desc = descriptor(kind)?;
    let full_name = desc.full_name().to_string();
    let msg = DynamicMessage::deserialize_with_options(desc, spec, &DeserializeOptions::new())
        .map_err(|e| format!("{kind} cannot be encoded as {full_name}: {e}"));
    Some(msg.map(|m| Any {
        type_url: format!("{TYPE_URL_PREFIX}{full_name}"),
        value: m.encode_to_vec(),
    }))
}

/// A received protobuf spec (`any.type_url` not empty) rendered as the JSON
/// our store keeps. `Err` names the kind and the problem.
pub fn decode(kind: ResourceKind, any: &Any) -> Result<Value, String> {
    let Some(desc) = descriptor(kind) else {
        return Err(format!(
            "{kind} is carried as JSON, got protobuf type URL {:?}",
            any.type_url
        ));
    };
    let expected = format!("{TYPE_URL_PREFIX}{}", desc.full_name());
    if any.type_url != expected {
        return Err(format!(
            "{kind} spec has type URL {:?}, expected {expected:?}",
            any.type_url
        ));
    }
    let msg = DynamicMessage::decode(desc.clone(), any.value.as_slice())
        .map_err(|e| format!("{kind} spec is not a valid {}: {e}", desc.full_name()))?;
    let mut json = msg
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .map_err(|e| format!("{kind} spec cannot be rendered as JSON: {e}"))?;
    tidy(&mut json, &desc);
    Ok(json)
}

/// Walks rendered JSON along its message descriptor: shortest durations,
/// integral numbers in Struct values.
fn tidy(v: &mut Value, desc: &MessageDescriptor) {
    match desc.full_name() {
        "google.protobuf.Duration" => {
            if let Value::String(s) = v {
                *s = shortest_duration(s);
            }
            return;
        }
        "google.protobuf.Struct" | "google.protobuf.Value" | "google.protobuf.ListValue" => {
            integral_numbers(v);
            return;
        }
        _ => {}
    }
    let Value::Object(obj) = v else { return };
    for field in desc.fields() {
        let Some(x) = obj.get_mut(field.json_name()) else {
            continue;
        };
        let Kind::Message(m) = field.kind() else {
            continue;
        };
        if field.is_map() {
            if let (Kind::Message(vm), Value::Object(entries)) =
                (m.map_entry_value_field().kind(), x)
            {
                entries.values_mut().for_each(|e| tidy(e, &vm));
            }
        } else if field.is_list() {
            if let Value::Array(items) = x {
                items.iter_mut().for_each(|e| tidy(e, &m));
            }
        } else {
            tidy(x, &m);
        }
    }
}

/// `1.500s` -> `1.5s`, `2.000s` -> `2s`.
fn shortest_duration(s: &str) -> String {
    match s.strip_suffix('s') {
        Some(n) if n.contains('.') => {
            let n = n.trim_end_matches('0').trim_end_matches('.');
            format!("{n}s")
        }
        _ => s.to_string(),
    }
}

/// Whole doubles (as Struct holds every number) back to JSON integers.
fn integral_numbers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
                && f.abs() < 9_007_199_254_740_992.0
            {
                // Exact: |f| < 2^53 and whole.
                *v = if f >= 0.0 {
                    Value::from(f as u64)
                } else {
                    Value::from(f as i64)
                };
            }
        }
        Value::Array(a) => a.iter_mut().for_each(integral_numbers),
        Value::Object(o) => o.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_is_in_the_pool() {
        for k in ResourceKind::ALL {
            if let Some(m) = message_name(*k) {
                assert!(POOL.get_message_by_name(m).is_some(), "{m}");
            }
        }
    }

    #[test]
    fn durations_and_numbers_are_tidied() {
        assert_eq!(shortest_duration("1.500s"), "1.5s");
        assert_eq!(shortest_duration("2.000s"), "2s");
        assert_eq!(shortest_duration("-0.000001s"), "-0.000001s");
        assert_eq!(shortest_duration("10s"), "10s");
        let mut v = serde_json::json!({"a": 15000.0, "b": [1.5, -2.0], "c": "3.0"});
        integral_numbers(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": 15000, "b": [1.5, -2], "c": "3.0"})
        );
    }
}
