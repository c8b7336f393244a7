use super::*;
use serde_json::json;

fn mk_policy(name: &str, origin: Option<&str>, spec: Value) -> Policy {
    let mut labels = BTreeMap::new();
    if let Some(o) = origin {
        labels.insert(ORIGIN_LABEL.to_string(), o.to_string());
    }
    Policy {
        name: name.into(),
        labels,
        spec,
    }
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn dest<'a>(name: &'a str, labels: &'a BTreeMap<String, String>, port: u32) -> DestinationRef<'a> {
    DestinationRef {
        name,
        labels,
        port,
        port_name: None,
    }
}

#[test]
fn to_rules_merge_mesh_then_service_and_keep_unset_fields() {
    let policies = vec![
        mk_policy(
            "mesh-wide",
            None,
            json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"connectionTimeout": "5s", "http": {"requestTimeout": "15s", "streamIdleTimeout": "30m"}}}]}),
        ),
        mk_policy(
            "backend-only",
            None,
            json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "default": {"http": {"requestTimeout": "2s"}}}]}),
        ),
    ];
    let t = tags(&[("kuma.io/service", "web")]);
    let labels = BTreeMap::new();
    let proxy = ProxyRef {
        name: "web-1",
        labels: &labels,
        inbounds: vec![InboundRef {
            name: None,
            port: 80,
            tags: &t,
        }],
    };
    let (rules, errs) = rules_for(&proxy, &policies);
    assert!(errs.is_empty());
    let none = BTreeMap::new();
    let backend = rules.to_conf(&dest("backend", &none, 80)).unwrap();
    assert_eq!(
        backend.conf,
        json!({"connectionTimeout": "5s", "http": {"requestTimeout": "2s", "streamIdleTimeout": "30m"}})
    );
    assert_eq!(backend.origin, vec!["mesh-wide", "backend-only"]);
    let other = rules.to_conf(&dest("other", &none, 80)).unwrap();
    assert_eq!(other.conf["http"]["requestTimeout"], "15s");
}

#[test]
fn more_specific_top_level_target_wins_regardless_of_order() {
    let policies = vec![
        mk_policy(
            "for-web",
            None,
            json!({"targetRef": {"kind": "Dataplane", "labels": {"app": "web"}},
                   "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "10s"}}]}),
        ),
        mk_policy(
            "everyone",
            None,
            json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "1h"}}]}),
        ),
    ];
    let labels = tags(&[("app", "web")]);
    let t = tags(&[("kuma.io/service", "web")]);
    let proxy = ProxyRef {
        name: "web-1",
        labels: &labels,
        inbounds: vec![InboundRef {
            name: None,
            port: 80,
            tags: &t,
        }],
    };
    let (rules, _) = rules_for(&proxy, &policies);
    assert_eq!(rules.policies, vec!["everyone", "for-web"]);
    let none = BTreeMap::new();
    assert_eq!(
        rules.to_conf(&dest("x", &none, 1)).unwrap().conf,
        json!({"idleTimeout": "10s"})
    );
}

#[test]
fn zone_origin_beats_global_and_smaller_name_beats_larger() {
    let p = |n: &str, o: Option<&str>, v: &str| {
        mk_policy(
            n,
            o,
            json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": v}}]}),
        )
    };
    let labels = BTreeMap::new();
    let proxy = ProxyRef {
        name: "a",
        labels: &labels,
        inbounds: vec![],
    };
    let none = BTreeMap::new();

    let (rules, _) = rules_for(
        &proxy,
        &[
            p("zone-b", Some("zone"), "1s"),
            p("global-a", Some("global"), "2s"),
        ],
    );
    assert_eq!(
        rules.to_conf(&dest("x", &none, 1)).unwrap().conf["idleTimeout"],
        "1s"
    );

    let (rules, _) = rules_for(&proxy, &[p("aaa", None, "1s"), p("bbb", None, "2s")]);
    assert_eq!(
        rules.to_conf(&dest("x", &none, 1)).unwrap().conf["idleTimeout"],
        "1s"
    );
}

#[test]
fn policies_that_do_not_select_the_proxy_are_ignored() {
    let policies = vec![
        mk_policy(
            "other-dp",
            None,
            json!({"targetRef": {"kind": "Dataplane", "name": "other"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "1s"}}]}),
        ),
        mk_policy(
            "subset",
            None,
            json!({"targetRef": {"kind": "MeshSubset", "tags": {"version": "v2"}}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "2s"}}]}),
        ),
    ];
    let labels = BTreeMap::new();
    let t = tags(&[("kuma.io/service", "web"), ("version", "v1")]);
    let proxy = ProxyRef {
        name: "web-1",
        labels: &labels,
        inbounds: vec![InboundRef {
            name: None,
            port: 80,
            tags: &t,
        }],
    };
    let (rules, _) = rules_for(&proxy, &policies);
    assert!(rules.policies.is_empty());
    let none = BTreeMap::new();
    assert_eq!(rules.to_conf(&dest("x", &none, 1)), None);
}

#[test]
fn inbound_rules_respect_section_name() {
    let policies = vec![
        mk_policy(
            "all-inbounds",
            None,
            json!({"targetRef": {"kind": "Mesh"}, "rules": [{"default": {"idleTimeout": "1m"}}]}),
        ),
        mk_policy(
            "http-inbound",
            None,
            json!({"targetRef": {"kind": "Dataplane", "sectionName": "http"}, "rules": [{"default": {"http": {"requestTimeout": "3s"}}}]}),
        ),
    ];
    let labels = BTreeMap::new();
    let t = tags(&[("kuma.io/service", "web")]);
    let proxy = ProxyRef {
        name: "web-1",
        labels: &labels,
        inbounds: vec![
            InboundRef {
                name: Some("http"),
                port: 80,
                tags: &t,
            },
            InboundRef {
                name: None,
                port: 9000,
                tags: &t,
            },
        ],
    };
    let (rules, _) = rules_for(&proxy, &policies);
    let http = rules.inbound_conf(&proxy.inbounds[0]).unwrap();
    assert_eq!(
        http.conf,
        json!({"idleTimeout": "1m", "http": {"requestTimeout": "3s"}})
    );
    let other = rules.inbound_conf(&proxy.inbounds[1]).unwrap();
    assert_eq!(other.conf, json!({"idleTimeout": "1m"}));
}

#[test]
fn section_name_on_to_matches_port_name_or_number() {
    let policies = vec![mk_policy(
        "p",
        None,
        json!({"to": [{"targetRef": {"kind": "MeshService", "name": "b", "sectionName": "grpc"}, "default": {"idleTimeout": "1s"}}]}),
    )];
    let labels = BTreeMap::new();
    let proxy = ProxyRef {
        name: "a",
        labels: &labels,
        inbounds: vec![],
    };
    let (rules, _) = rules_for(&proxy, &policies);
    let none = BTreeMap::new();
    let grpc = DestinationRef {
        name: "b",
        labels: &none,
        port: 9090,
        port_name: Some("grpc"),
    };
    assert!(rules.to_conf(&grpc).is_some());
    assert!(rules.to_conf(&dest("b", &none, 80)).is_none());
}

#[test]
fn malformed_target_ref_is_reported_and_skipped() {
    let policies = vec![mk_policy(
        "bad",
        None,
        json!({"targetRef": {"kind": "Nope"}}),
    )];
    let labels = BTreeMap::new();
    let proxy = ProxyRef {
        name: "a",
        labels: &labels,
        inbounds: vec![],
    };
    let (rules, errs) = rules_for(&proxy, &policies);
    assert!(rules.policies.is_empty());
    assert_eq!(errs.len(), 1);
    assert!(errs[0].to_string().contains("unsupported kind"));
}

#[test]
fn merge_replaces_lists_and_ignores_nulls() {
    let mut base = json!({"a": [1, 2], "b": {"c": 1, "d": 2}, "e": 1});
    merge_json(&mut base, &json!({"a": [3], "b": {"c": 5}, "e": null}));
    assert_eq!(base, json!({"a": [3], "b": {"c": 5, "d": 2}, "e": 1}));
}

#[test]
fn proxies_selected_by_the_same_policies_share_one_computed_rule_set() {
    let policies = vec![
        mk_policy(
            "mesh-wide",
            None,
            json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"idleTimeout": "20s"}}]}),
        ),
        mk_policy(
            "web-only",
            None,
            json!({"targetRef": {"kind": "Dataplane", "labels": {"app": "web"}},
                "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "5s"}}]}),
        ),
        mk_policy(
            "broken",
            None,
            json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Nope"}}]}),
        ),
    ];
    let set = PolicySet::new(&policies);
    let web = tags(&[("app", "web")]);
    let db = tags(&[("app", "db")]);
    fn proxy<'a>(name: &'a str, labels: &'a BTreeMap<String, String>) -> ProxyRef<'a> {
        ProxyRef {
            name,
            labels,
            inbounds: vec![],
        }
    }
    let w1 = set.rules_for(&proxy("web-1", &web));
    let w2 = set.rules_for(&proxy("web-2", &web));
    let d1 = set.rules_for(&proxy("db-1", &db));
    assert!(
        Arc::ptr_eq(&w1.rules, &w2.rules),
        "same selection, one rule set"
    );
    assert!(!Arc::ptr_eq(&w1.rules, &d1.rules));
    // Precedence is kept: the Dataplane-targeted policy merges last and wins.
    let labels = BTreeMap::new();
    let conf = w1.rules.to_conf(&dest("anything", &labels, 80)).unwrap();
    assert_eq!(conf.conf["idleTimeout"], "5s");
    assert_eq!(conf.origin, vec!["mesh-wide", "web-only"]);
    let conf = d1.rules.to_conf(&dest("anything", &labels, 80)).unwrap();
    assert_eq!(conf.conf["idleTimeout"], "20s");
    // The malformed `to` entry is skipped and reported to every selected proxy.
    assert_eq!(w1.errors.len(), 1);
    assert_eq!(d1.errors.len(), 1);
    assert!(w1.errors[0].to_string().contains("spec.to[0].targetRef"));
    // The same answer as the one-shot function.
    let (rules, errors) = rules_for(&proxy("web-3", &web), &policies);
    assert_eq!(rules, *w1.rules);
    assert_eq!(errors, w1.errors.to_vec());
}

#[test]
fn a_policy_set_keeps_every_input_policy_malformed_ones_included() {
    let policies = vec![
        mk_policy(
            "ok",
            None,
            json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"}, "default": {}}]}),
        ),
        mk_policy("bad-top", None, json!({"targetRef": {"kind": "Nope"}})),
    ];
    let set = PolicySet::new(&policies);
    let names: Vec<&str> = set.policies().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["ok", "bad-top"]);
    let labels = BTreeMap::new();
    let sel = set.rules_for(&ProxyRef {
        name: "web-1",
        labels: &labels,
        inbounds: vec![],
    });
    assert_eq!(sel.rules.policies, vec!["ok"]);
    assert!(
        sel.errors[0].to_string().contains("bad-top"),
        "{:?}",
        sel.errors
    );
}
