//! Golden tests: `tests/golden/NN.input.yaml` (a mesh and the proxy to build)
//! -> `NN.golden.yaml` (the Envoy resources it gets). Refresh with
//! `UPDATE_GOLDEN=1 cargo test -p kuma-xds --test xds golden`.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::google::protobuf::Any;
use kuma_policy::{Policy, PolicySet};
use kuma_xds::input::{DataplaneView, MeshServiceView};
use kuma_xds::{
    MeshContext, MeshEndpoints, OutboundMemo, ProxyMeta, ResourcePlan, SnapshotCache,
    generate_memo, generate_with,
};
use prost::Message;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Input {
    mesh: String,
    proxy: String,
    dataplanes: Vec<Named>,
    #[serde(default)]
    mesh_services: Vec<Named>,
    #[serde(default)]
    mesh_timeouts: Vec<Named>,
    #[serde(default)]
    offline: BTreeSet<String>,
    /// kuma-dp's DNS port, as the proxy reports it.
    #[serde(default)]
    dns_port: Option<u32>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    spec: serde_json::Value,
    #[serde(default)]
    status: serde_json::Value,
}

fn context(input: &Input) -> MeshContext {
    MeshContext {
        mesh: input.mesh.clone(),
        dataplanes: input
            .dataplanes
            .iter()
            .map(|d| {
                let spec = serde_json::from_value(d.spec.clone()).expect("dataplane spec");
                (
                    d.name.clone(),
                    Arc::new(DataplaneView {
                        name: d.name.clone(),
                        labels: d.labels.clone(),
                        spec,
                    }),
                )
            })
            .collect(),
        services: input
            .mesh_services
            .iter()
            .map(|s| {
                let spec = serde_json::from_value(s.spec.clone()).expect("meshservice spec");
                let status = if s.status.is_null() {
                    Default::default()
                } else {
                    serde_json::from_value(s.status.clone()).expect("status")
                };
                (
                    s.name.clone(),
                    Arc::new(MeshServiceView {
                        name: s.name.clone(),
                        labels: s.labels.clone(),
                        spec,
                        status,
                    }),
                )
            })
            .collect(),
        timeouts: Arc::new(PolicySet::new(
            &input
                .mesh_timeouts
                .iter()
                .map(|p| Policy {
                    name: p.name.clone(),
                    labels: p.labels.clone(),
                    spec: p.spec.clone(),
                })
                .collect::<Vec<_>>(),
        )),
        offline: input.offline.clone(),
    }
}

/// Debug output without default-valued fields, indented under `indent`.
fn compact(debug: &str, indent: &str) -> String {
    let mut out = String::new();
    for line in debug.lines() {
        let t = line.trim();
        let default = ["None,", "[],", "0,", "false,", "\"\",", "{},"]
            .iter()
            .any(|d| t.ends_with(&format!(": {d}")));
        if !default {
            writeln!(out, "{indent}{line}").unwrap();
        }
    }
    out
}

fn decode<M: Message + Default>(any: &Any) -> M {
    M::decode(any.value.as_slice()).expect("decodes")
}

fn render(plan: &ResourcePlan, any: &Any) -> String {
    let mut out = String::new();
    match plan {
        ResourcePlan::Cluster(_) => {
            let mut c: Cluster = decode(any);
            let opts: Vec<(String, HttpProtocolOptions)> = c
                .typed_extension_protocol_options
                .drain()
                .map(|(k, v)| (k, decode(&v)))
                .collect();
            out += &compact(&format!("{c:#?}"), "    ");
            for (k, v) in opts {
                writeln!(out, "    # typed_extension_protocol_options[{k}]:").unwrap();
                out += &compact(&format!("{v:#?}"), "    ");
            }
        }
        ResourcePlan::Endpoints(_) => {
            out += &compact(
                &format!("{:#?}", decode::<ClusterLoadAssignment>(any)),
                "    ",
            )
        }
        ResourcePlan::Listener(_) => {
            let mut l: Listener = decode(any);
            let mut nested = Vec::new();
            for chain in &mut l.filter_chains {
                for f in &mut chain.filters {
                    if let Some(filter::ConfigType::TypedConfig(a)) = f.config_type.take() {
                        let text = if a.type_url.ends_with("HttpConnectionManager") {
                            let mut hcm: HttpConnectionManager = decode(&a);
                            for hf in &mut hcm.http_filters {
                                if let Some(http_filter::ConfigType::TypedConfig(a)) =
                                    &mut hf.config_type
                                {
                                    a.value.clear();
                                }
                            }
                            format!("{hcm:#?}")
                        } else {
                            format!("{:#?}", decode::<TcpProxy>(&a))
                        };
                        nested.push((f.name.clone(), text));
                    }
                }
            }
            out += &compact(&format!("{l:#?}"), "    ");
            for (name, text) in nested {
                writeln!(out, "    # filter {name}:").unwrap();
                out += &compact(&text, "    ");
            }
        }
    }
    out
}

fn run_case(input_path: &Path) {
    let input: Input =
        serde_yaml::from_str(&std::fs::read_to_string(input_path).unwrap()).expect("input yaml");
    let ctx = context(&input);
    let endpoints = MeshEndpoints::compute(&ctx);
    let dp = ctx
        .dataplanes
        .get(&input.proxy)
        .expect("proxy in dataplanes");
    let plan = generate_with(
        &ctx,
        &endpoints,
        dp,
        ProxyMeta {
            dns_port: input.dns_port,
        },
    );
    let cache = SnapshotCache::new();
    let snap = cache.build(&plan.resources);

    let mut out = String::new();
    writeln!(
        out,
        "# generated from {}; do not edit",
        input_path.file_name().unwrap().to_string_lossy()
    )
    .unwrap();
    writeln!(out, "warnings: {:?}", plan.warnings).unwrap();
    writeln!(out, "resources:").unwrap();
    for r in snap.iter() {
        writeln!(
            out,
            "- type: {:?}\n  name: {:?}\n  version: {}\n  envoy: |",
            r.plan.resource_type(),
            &*r.name,
            r.version
        )
        .unwrap();
        out += &render(&r.plan, &r.any);
    }
    let golden = input_path.with_file_name(
        input_path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".input.yaml", ".golden.yaml"),
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &out).unwrap();
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1", golden.display()));
    assert_eq!(
        out,
        expected,
        "{} differs: run with UPDATE_GOLDEN=1 and review the diff",
        golden.display()
    );
}

#[test]
fn golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".input.yaml"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty());
    for p in inputs {
        run_case(&p);
    }
}

/// One memo shared by every proxy of a mesh (as the zone's sync does) gives
/// each proxy the plan it gets alone, also when proxies under different
/// policies call the same MeshService port.
#[test]
fn a_memo_shared_by_the_proxies_of_a_mesh_changes_no_plan() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut input: Input =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("02.input.yaml")).unwrap())
            .expect("input yaml");
    // Not `app: web`: the override for traffic to backend is not its.
    input.dataplanes.push(Named {
        name: "other-1".into(),
        labels: BTreeMap::new(),
        spec: serde_json::json!({"networking": {
            "address": "10.0.0.9",
            "inbound": [{"port": 20009, "tags": {"kuma.io/service": "other"}}],
            "outbound": [{"port": 10001, "backendRef": {"kind": "MeshService", "name": "backend", "port": 20002}}],
        }}),
        status: serde_json::Value::Null,
    });
    let ctx = context(&input);
    let endpoints = MeshEndpoints::compute(&ctx);
    let alone = |dp| generate_with(&ctx, &endpoints, dp, ProxyMeta::default()).resources;
    let listener = |plans: &[std::sync::Arc<ResourcePlan>]| {
        plans
            .iter()
            .find_map(|p| match &**p {
                ResourcePlan::Listener(l) if l.name == "outbound:127.0.0.1:10001" => {
                    Some(l.clone())
                }
                _ => None,
            })
            .expect("the outbound to backend")
    };
    let web = alone(&ctx.dataplanes["web-1"]);
    let other = alone(&ctx.dataplanes["other-1"]);
    assert_ne!(
        listener(&web),
        listener(&other),
        "the case must give the two callers of backend different timeouts"
    );
    for order in [false, true] {
        let mut memo = OutboundMemo::default();
        let mut dps: Vec<_> = ctx.dataplanes.values().collect();
        if order {
            dps.reverse();
        }
        for dp in dps {
            let shared =
                generate_memo(&ctx, &endpoints, dp, ProxyMeta::default(), &mut memo).resources;
            assert_eq!(shared, alone(dp), "{}", dp.name);
        }
    }
}
