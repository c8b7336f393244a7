//! Kuma's protobuf kinds travel as protobuf `Any` (wire-compatible with a
//! real Kuma peer) and come back as the JSON our store keeps.

use envoy_types::pb::google::protobuf::Any;
use kuma_kds::legacy;
use kuma_kds::mapping::{MapError, Wire};
use kuma_kds::pb::KumaResource;
use kuma_kds::pb::kuma_resource::Meta;
use kuma_model::ResourceKind;
use kuma_model::resource::ResourceInput;
use kuma_model::specs::{self, Context};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// A resource in Kuma's JSON, through the REST write path: the wire form
/// of what the store holds (canonical spec).
fn stored(value: Value) -> Wire {
    let input = ResourceInput::from_kuma_json(value, None).expect("envelope");
    let ctx = Context {
        kind: input.kind,
        mesh: input.mesh.as_deref(),
        name: input.name.as_deref().unwrap_or(""),
        labels: &input.labels,
    };
    let spec = specs::validate(&ctx, &input.spec).expect("valid");
    Wire {
        kind: input.kind,
        name: input.name.clone().unwrap_or_default(),
        mesh: input.mesh.clone(),
        labels: input.labels.clone(),
        spec,
        status: None,
    }
}

/// What the receiving sync engine stores for a decoded spec.
fn revalidated(w: &Wire) -> Value {
    let ctx = Context {
        kind: w.kind,
        mesh: w.mesh.as_deref(),
        name: &w.name,
        labels: &w.labels,
    };
    specs::validate(&ctx, &w.spec).expect("decoded spec validates")
}

/// Sends `w` as KDS does and reads it back; checks the type URL on the way.
fn round_trip(w: &Wire) -> Wire {
    let kr = w.to_proto();
    let spec = kr.spec.as_ref().expect("spec");
    assert_eq!(
        Some(spec.type_url.clone()),
        legacy::type_url(w.kind),
        "{}",
        w.name
    );
    assert!(
        serde_json::from_slice::<Value>(&spec.value).is_err() || spec.value.is_empty(),
        "{}: protobuf, not JSON",
        w.name
    );
    let back = Wire::from_envoy(w.kind, &w.to_envoy()).expect("decodes");
    assert_eq!(Wire::from_proto(w.kind, &kr).unwrap(), back);
    back
}

/// Byte-for-byte the same JSON back, before and after the receiver's
/// validation, so the same content version on both ends.
fn check_unchanged(w: &Wire) {
    let back = round_trip(w);
    assert_eq!(back.spec, w.spec, "{} {}", w.kind, w.name);
    assert_eq!(&back, w);
    assert_eq!(back.version(), w.version(), "content version unchanged");
    assert_eq!(revalidated(&back), w.spec);
}

/// The same JSON once stored: the receiver's validation (which every
/// received spec goes through) restores the fields our model always
/// writes even at their default value (`kumaCpCompatible: false`), which
/// protobuf does not carry.
fn check_unchanged_as_stored(w: &Wire) {
    let mut back = round_trip(w);
    back.spec = revalidated(&back);
    assert_eq!(back.spec, w.spec, "{} {}", w.kind, w.name);
    assert_eq!(back.version(), w.version(), "content version unchanged");
}

#[test]
fn every_valid_fixture_of_a_protobuf_kind_round_trips_unchanged() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/valid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut seen = BTreeMap::<ResourceKind, usize>::new();
    for f in files {
        let value: Value = serde_yaml::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let w = stored(value);
        if legacy::message_name(w.kind).is_none() {
            // New-style kinds stay JSON with an empty type URL, as in Kuma.
            let kr = w.to_proto();
            assert_eq!(kr.spec.as_ref().unwrap().type_url, "", "{}", f.display());
            continue;
        }
        check_unchanged(&w);
        *seen.entry(w.kind).or_default() += 1;
    }
    for k in [
        ResourceKind::Mesh,
        ResourceKind::Dataplane,
        ResourceKind::Secret,
        ResourceKind::GlobalSecret,
    ] {
        assert!(seen.contains_key(&k), "no fixture of {k}");
    }
    assert!(seen[&ResourceKind::Dataplane] >= 3);
}

#[test]
fn type_urls_are_kumas() {
    let url = |k| legacy::type_url(k).unwrap();
    assert_eq!(
        url(ResourceKind::Mesh),
        "type.googleapis.com/kuma.mesh.v1alpha1.Mesh"
    );
    assert_eq!(
        url(ResourceKind::Dataplane),
        "type.googleapis.com/kuma.mesh.v1alpha1.Dataplane"
    );
    assert_eq!(
        url(ResourceKind::DataplaneInsight),
        "type.googleapis.com/kuma.mesh.v1alpha1.DataplaneInsight"
    );
    assert_eq!(
        url(ResourceKind::ServiceInsight),
        "type.googleapis.com/kuma.mesh.v1alpha1.ServiceInsight"
    );
    assert_eq!(
        url(ResourceKind::Secret),
        "type.googleapis.com/kuma.system.v1alpha1.Secret"
    );
    assert_eq!(
        url(ResourceKind::GlobalSecret),
        "type.googleapis.com/kuma.system.v1alpha1.Secret"
    );
    assert_eq!(legacy::type_url(ResourceKind::MeshTimeout), None);
    assert_eq!(legacy::type_url(ResourceKind::MeshService), None);
}

#[test]
fn insights_round_trip_unchanged() {
    let dpi = stored(json!({
        "type": "DataplaneInsight", "name": "dp-1", "mesh": "default",
        "subscriptions": [{
            "id": "3a7c",
            "controlPlaneInstanceId": "cp-1",
            "connectTime": "2024-05-01T10:00:00Z",
            "disconnectTime": "2024-05-01T11:00:00.123Z",
            "status": {
                "lastUpdateTime": "2024-05-01T10:00:05.000001Z",
                "total": {"responsesSent": "18446744073709551615", "responsesAcknowledged": "4"},
                "cds": {"responsesSent": "1", "responsesRejected": 2},
            },
            "version": {
                "kumaDp": {"version": "2.9.0", "gitTag": "v2.9.0", "gitCommit": "abc"},
                "envoy": {"version": "1.31.0"},
                "dependencies": {"coredns": "1.11"},
            },
            "generation": 3,
        }],
        "mTLS": {
            "certificateExpirationTime": "2024-06-01T00:00:00Z",
            "issuedBackend": "identity",
            "certificateRegenerations": 1,
            "supportedBackends": ["identity", "ca-1"],
        },
        "metadata": {"features": ["feature-tcp-accesslog-via-named-pipe"], "workdir": "/tmp", "port": 15000, "ratio": 0.5},
    }));
    assert!(dpi.spec["subscriptions"][0]["status"]["cds"]["responsesRejected"] == "2");
    check_unchanged_as_stored(&dpi);
    // Only those defaults differ before validation.
    let raw = round_trip(&dpi).spec;
    let version = &raw["subscriptions"][0]["version"];
    assert_eq!(version["kumaDp"].get("kumaCpCompatible"), None);
    assert_eq!(
        raw["metadata"], dpi.spec["metadata"],
        "integers stay integers"
    );

    let si = stored(json!({
        "type": "ServiceInsight", "name": "all-services-default", "mesh": "default",
        "services": {
            "backend": {
                "status": "partially_degraded",
                "dataplanes": {"total": 3, "online": 2, "offline": 1},
                "issuedBackends": {"ca-1": 3},
                "serviceType": "internal",
                "addressPort": "backend.mesh:80",
                "zones": ["zone-1", "zone-2"],
            },
        },
    }));
    check_unchanged(&si);
}

/// Protobuf bytes built by hand, field by field.
mod pbw {
    pub fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    pub fn bytes(field: u32, b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from(field << 3 | 2), &mut out);
        varint(b.len() as u64, &mut out);
        out.extend_from_slice(b);
        out
    }
    pub fn uint(field: u32, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from(field << 3), &mut out);
        varint(v, &mut out);
        out
    }
}

fn kuma_resource(name: &str, mesh: &str, type_url: &str, value: Vec<u8>) -> KumaResource {
    KumaResource {
        meta: Some(Meta {
            name: name.into(),
            mesh: mesh.into(),
            version: String::new(),
            labels: [("kuma.io/origin".to_string(), "global".to_string())]
                .into_iter()
                .collect(),
        }),
        spec: Some(Any {
            type_url: type_url.into(),
            value,
        }),
        status: None,
    }
}

#[test]
fn hand_encoded_secret_decodes_to_base64_data() {
    // Secret { data: BytesValue { value: "test\n" } }
    let bytes_value = pbw::bytes(1, b"test\n");
    let secret = pbw::bytes(1, &bytes_value);
    for kind in [ResourceKind::Secret, ResourceKind::GlobalSecret] {
        let mesh = if kind == ResourceKind::Secret {
            "default"
        } else {
            ""
        };
        let kr = kuma_resource(
            "ca",
            mesh,
            "type.googleapis.com/kuma.system.v1alpha1.Secret",
            secret.clone(),
        );
        let w = Wire::from_proto(kind, &kr).unwrap();
        assert_eq!(w.spec, json!({"data": "dGVzdAo="}));
    }
    // And ours encodes to exactly those bytes.
    let w = stored(json!({"type": "Secret", "name": "ca", "mesh": "default", "data": "dGVzdAo="}));
    assert_eq!(w.to_proto().spec.unwrap().value, secret);
    // An empty secret is present but empty, as Kuma renders it.
    let empty = pbw::bytes(1, &[]);
    let kr = kuma_resource(
        "e",
        "",
        "type.googleapis.com/kuma.system.v1alpha1.Secret",
        empty,
    );
    let w = Wire::from_proto(ResourceKind::GlobalSecret, &kr).unwrap();
    assert_eq!(w.spec, json!({"data": ""}));
}

#[test]
fn hand_encoded_mesh_and_dataplane_decode_to_kuma_json() {
    let mesh = [pbw::bytes(8, b"*"), pbw::bytes(8, b"MeshTimeout")].concat();
    let kr = kuma_resource(
        "default",
        "",
        "type.googleapis.com/kuma.mesh.v1alpha1.Mesh",
        mesh,
    );
    let w = Wire::from_proto(ResourceKind::Mesh, &kr).unwrap();
    assert_eq!(
        w.spec,
        json!({"skipCreatingInitialPolicies": ["*", "MeshTimeout"]})
    );
    // An empty Mesh is empty bytes.
    let kr = kuma_resource(
        "m",
        "",
        "type.googleapis.com/kuma.mesh.v1alpha1.Mesh",
        vec![],
    );
    assert_eq!(
        Wire::from_proto(ResourceKind::Mesh, &kr).unwrap().spec,
        json!({})
    );

    // Dataplane { networking { address: "10.0.0.1",
    //   inbound { port: 8080, servicePort: 18080, name: "http", state: NotReady,
    //             serviceProbe { timeout: 1.5s, healthy_threshold: 2 } },
    //   outbound { port: 10001, backendRef { kind: MeshService, name: redis, port: 6379 } },
    //   transparent_proxying { redirect_port_inbound: 15006, ip_family_mode: IPv6 },
    //   admin { port: 9901 } } }
    let duration = [pbw::uint(1, 1), pbw::uint(2, 500_000_000)].concat();
    let probe = [pbw::bytes(2, &duration), pbw::bytes(4, &pbw::uint(1, 2))].concat();
    let inbound = [
        pbw::uint(3, 8080),
        pbw::uint(4, 18080),
        pbw::bytes(10, b"http"),
        pbw::uint(9, 1),
        pbw::bytes(8, &probe),
    ]
    .concat();
    let backend_ref = [
        pbw::bytes(1, b"MeshService"),
        pbw::bytes(2, b"redis"),
        pbw::uint(3, 6379),
    ]
    .concat();
    let outbound = [pbw::uint(4, 10001), pbw::bytes(6, &backend_ref)].concat();
    let tp = [pbw::uint(1, 15006), pbw::uint(6, 3)].concat();
    let networking = [
        pbw::bytes(5, b"10.0.0.1"),
        pbw::bytes(1, &inbound),
        pbw::bytes(2, &outbound),
        pbw::bytes(4, &tp),
        pbw::bytes(8, &pbw::uint(1, 9901)),
    ]
    .concat();
    let dp = pbw::bytes(1, &networking);
    let kr = kuma_resource(
        "dp-1",
        "default",
        "type.googleapis.com/kuma.mesh.v1alpha1.Dataplane",
        dp,
    );
    let w = Wire::from_proto(ResourceKind::Dataplane, &kr).unwrap();
    let expected = json!({
        "networking": {
            "address": "10.0.0.1",
            "inbound": [{
                "port": 8080,
                "servicePort": 18080,
                "name": "http",
                "state": "NotReady",
                "serviceProbe": {"timeout": "1.5s", "healthyThreshold": 2},
            }],
            "outbound": [{
                "port": 10001,
                "backendRef": {"kind": "MeshService", "name": "redis", "port": 6379},
            }],
            "transparentProxying": {"redirectPortInbound": 15006, "ipFamilyMode": "IPv6"},
            "admin": {"port": 9901},
        }
    });
    assert_eq!(w.spec, expected);
    assert_eq!(w.labels["kuma.io/origin"], "global");
    assert_eq!(revalidated(&w), expected, "already what the store keeps");
}

#[test]
fn hand_encoded_insight_decodes_uint64_as_string_and_timestamps_as_rfc3339() {
    // DiscoverySubscription { id, control_plane_instance_id, connect_time,
    //   status { total { responses_sent: 2^40 } } }
    let ts = [pbw::uint(1, 1_714_557_600), pbw::uint(2, 250_000_000)].concat();
    let total = pbw::uint(1, 1 << 40);
    let status = pbw::bytes(2, &total);
    let sub = [
        pbw::bytes(1, b"s1"),
        pbw::bytes(2, b"cp-1"),
        pbw::bytes(3, &ts),
        pbw::bytes(5, &status),
    ]
    .concat();
    let dpi = pbw::bytes(1, &sub);
    let kr = kuma_resource(
        "dp-1",
        "default",
        "type.googleapis.com/kuma.mesh.v1alpha1.DataplaneInsight",
        dpi,
    );
    let w = Wire::from_proto(ResourceKind::DataplaneInsight, &kr).unwrap();
    assert_eq!(
        w.spec,
        json!({"subscriptions": [{
            "id": "s1",
            "controlPlaneInstanceId": "cp-1",
            "connectTime": "2024-05-01T10:00:00.250Z",
            "status": {"total": {"responsesSent": "1099511627776"}},
        }]})
    );
}

#[test]
fn undecodable_payloads_are_map_errors_naming_the_kind() {
    let url = "type.googleapis.com/kuma.mesh.v1alpha1.Dataplane";
    let kr = kuma_resource("dp-1", "default", url, vec![0xff, 0xff, 0xff, 0xff]);
    match Wire::from_proto(ResourceKind::Dataplane, &kr) {
        Err(MapError::Decode { name, reason }) => {
            assert_eq!(name, "dp-1");
            assert!(reason.contains("Dataplane"), "{reason}");
            assert!(reason.contains("kuma.mesh.v1alpha1.Dataplane"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Truncated: a length prefix longer than what follows.
    let kr = kuma_resource("dp-1", "default", url, vec![0x0a, 0x10, 0x2a]);
    let err = Wire::from_proto(ResourceKind::Dataplane, &kr).unwrap_err();
    assert!(err.to_string().contains("Dataplane"), "{err}");

    // The wrong message for the kind.
    let kr = kuma_resource(
        "dp-1",
        "default",
        "type.googleapis.com/kuma.system.v1alpha1.Secret",
        vec![],
    );
    let err = Wire::from_proto(ResourceKind::Dataplane, &kr).unwrap_err();
    assert!(
        err.to_string().contains("kuma.system.v1alpha1.Secret"),
        "{err}"
    );

    // A type URL on a kind Kuma carries as JSON.
    let kr = kuma_resource(
        "t",
        "default",
        "type.googleapis.com/kuma.mesh.v1alpha1.Dataplane",
        vec![],
    );
    let err = Wire::from_proto(ResourceKind::MeshTimeout, &kr).unwrap_err();
    assert!(err.to_string().contains("MeshTimeout"), "{err}");
}

#[test]
fn json_with_an_empty_type_url_is_still_read() {
    // Old peers of ours, and Kuma's new-style kinds.
    let spec =
        json!({"networking": {"address": "10.0.0.1", "inbound": [{"port": 80, "name": "a"}]}});
    let kr = kuma_resource("dp-1", "default", "", serde_json::to_vec(&spec).unwrap());
    assert_eq!(
        Wire::from_proto(ResourceKind::Dataplane, &kr).unwrap().spec,
        spec
    );
}

#[test]
fn a_spec_without_protobuf_form_falls_back_to_json() {
    let w = Wire {
        kind: ResourceKind::Mesh,
        name: "m".into(),
        mesh: None,
        labels: BTreeMap::new(),
        spec: json!({"mtls": {"enabledBackend": "ca-1"}}),
        status: None,
    };
    let spec = w.to_proto().spec.unwrap();
    assert_eq!(spec.type_url, "");
    assert_eq!(Wire::from_envoy(w.kind, &w.to_envoy()).unwrap(), w);
}
