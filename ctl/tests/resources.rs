//! apply, get, delete and inspect against a real kuma-cp.

use std::collections::BTreeSet;

use crate::support::{ControlPlane, Kumactl, assert_golden, normalise_ages, valid_fixtures};
use kuma_model::ResourceKind;

const MESHES: &str = "\
type: Mesh
name: payments
---
type: Mesh
name: {{ second }}
";

const POLICIES: &str = "\
type: MeshTimeout
name: timeout-a
mesh: default
spec:
  targetRef:
    kind: Mesh
  to:
    - targetRef:
        kind: Mesh
      default:
        idleTimeout: 20s
---
type: MeshTimeout
name: timeout-b
mesh: payments
spec:
  targetRef:
    kind: Mesh
  to:
    - targetRef:
        kind: Mesh
      default:
        idleTimeout: 30s
";

const DATAPLANES: &str = "\
type: Dataplane
mesh: default
name: backend-1
labels:
  app: backend
  version: v1
networking:
  address: 192.168.0.2
  inbound:
    - port: 8080
      name: http
    - port: 9090
      name: metrics
      state: NotReady
---
type: Dataplane
mesh: default
name: web-1
labels:
  app: web
networking:
  address: 192.168.0.3
  inbound:
    - port: 8080
      name: http
---
type: Dataplane
mesh: default
name: edge
networking:
  address: 10.0.0.5
  gateway:
    type: DELEGATED
    tags:
      kuma.io/service: edge
";

const ZONES: &str = "\
type: Zone
name: zone-1
---
type: Zone
name: zone-2
enabled: false
";

/// Meshes, policies, dataplanes and zones, applied the three ways kumactl reads
/// input: a file with a variable, stdin, and a directory-free multi-doc file.
fn seed(k: &Kumactl) {
    let meshes = k.file("meshes.yaml", MESHES);
    let out = k
        .run(&["apply", "-f", &meshes, "-v", "second=shipping"])
        .ok();
    assert_eq!(
        out,
        "resource type=\"Mesh\" mesh=\"\" name=\"payments\" Created\n\
         resource type=\"Mesh\" mesh=\"\" name=\"shipping\" Created\n"
    );
    let out = k.run_with_stdin(&["apply", "-f", "-"], Some(POLICIES)).ok();
    assert_eq!(
        out,
        "resource type=\"MeshTimeout\" mesh=\"default\" name=\"timeout-a\" Created\n\
         resource type=\"MeshTimeout\" mesh=\"payments\" name=\"timeout-b\" Created\n"
    );
    let dps = k.file("dataplanes.yaml", DATAPLANES);
    k.run(&["apply", "-f", &dps]).ok();
    let zones = k.file("zones.yaml", ZONES);
    k.run(&["apply", "-f", &zones]).ok();
}

#[test]
fn get_tables_match_kumas_columns() {
    let cp = ControlPlane::start();
    let k = Kumactl::for_cp(&cp);
    seed(&k);
    for (args, golden) in [
        (&["get", "meshes"][..], "get-meshes.txt"),
        (&["get", "meshtimeouts"][..], "get-meshtimeouts-default.txt"),
        (
            &["get", "meshtimeouts", "-m", "payments"][..],
            "get-meshtimeouts-payments.txt",
        ),
        (&["get", "dataplanes"][..], "get-dataplanes.txt"),
        (&["get", "dataplane", "web-1"][..], "get-dataplane.txt"),
        (&["get", "zones"][..], "get-zones.txt"),
        (&["get", "mesh", "payments"][..], "get-mesh.txt"),
        (
            &["get", "meshes", "--size", "2"][..],
            "get-meshes-page-1.txt",
        ),
        (
            &["get", "meshes", "--size", "2", "--offset", "2"][..],
            "get-meshes-page-2.txt",
        ),
        (&["get", "secrets"][..], "get-secrets-empty.txt"),
    ] {
        let out = k.run(args).ok();
        assert_golden(golden, &normalise_ages(&out));
    }
}

#[test]
fn get_json_and_yaml_are_lists_and_resources() {
    let cp = ControlPlane::start();
    let k = Kumactl::for_cp(&cp);
    seed(&k);

    let json: serde_json::Value =
        serde_json::from_str(&k.run(&["get", "meshes", "-o", "json"]).ok()).unwrap();
    assert_eq!(json["total"], 3);
    let names: Vec<&str> = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "payments", "shipping"]);
    assert!(json["next"].is_null());

    let page: serde_json::Value = serde_json::from_str(
        &k.run(&[
            "get", "meshes", "-o", "json", "--size", "1", "--offset", "1",
        ])
        .ok(),
    )
    .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["name"], "payments");
    assert!(page["next"].is_string(), "{page}");

    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&k.run(&["get", "meshtimeouts", "-o", "yaml"]).ok()).unwrap();
    assert_eq!(yaml["total"], 1);
    assert_eq!(yaml["items"][0]["name"], "timeout-a");

    let one: serde_json::Value = serde_json::from_str(
        &k.run(&[
            "get",
            "meshtimeout",
            "timeout-b",
            "-m",
            "payments",
            "-o",
            "json",
        ])
        .ok(),
    )
    .unwrap();
    assert_eq!(one["type"], "MeshTimeout");
    assert_eq!(one["mesh"], "payments");
    assert_eq!(one["spec"]["to"][0]["default"]["idleTimeout"], "30s");

    let err = k.run(&["get", "meshtimeout", "nope"]).fails();
    assert_eq!(err, "Error: No resources found in default mesh\n");
    let err = k.run(&["get", "zone", "nope"]).fails();
    assert_eq!(err, "Error: No resources found\n");
}

#[test]
fn every_kind_applies_lists_round_trips_as_yaml_and_deletes() {
    let cp = ControlPlane::start();
    let k = Kumactl::for_cp(&cp);
    let fixtures = valid_fixtures();

    // Every kind a user can write has at least one valid example.
    let covered: BTreeSet<&str> = fixtures
        .iter()
        .filter_map(|(_, v)| v["type"].as_str())
        .collect();
    let missing: Vec<&str> = ResourceKind::ALL
        .iter()
        .map(|k| k.descriptor())
        .filter(|d| !d.read_only && !d.kumactl_list_arg.is_empty())
        .map(|d| d.name)
        .filter(|n| !covered.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "kinds without a valid fixture: {missing:?}"
    );

    // Meshes first, so that resources of other meshes find theirs.
    let mut ordered: Vec<&(std::path::PathBuf, serde_yaml::Value)> = fixtures.iter().collect();
    ordered.sort_by_key(|(_, v)| v["type"] != "Mesh");
    for (path, value) in &ordered {
        let kind_name = value["type"].as_str().unwrap();
        let kind = ResourceKind::from_name(kind_name).unwrap();
        let d = kind.descriptor();
        let name = value["name"].as_str().unwrap();
        let mesh = value["mesh"].as_str().unwrap_or("default");
        let ctx = format!("{} ({kind_name}/{name})", path.display());

        let applied = k.run(&["apply", "-f", path.to_str().unwrap()]);
        assert_eq!(applied.code, 0, "{ctx}: {applied:#?}");
        // `default` exists from the start, so its fixture updates it.
        assert!(
            applied.stdout.ends_with(" Created\n") || applied.stdout.ends_with(" Updated\n"),
            "{ctx}: {applied:#?}"
        );

        let list = k.run(&["get", d.kumactl_list_arg, "-m", mesh]).ok();
        assert!(
            list.lines()
                .skip(1)
                .any(|l| l.split_whitespace().any(|c| c == name)),
            "{ctx}: not listed:\n{list}"
        );

        let yaml = k
            .run(&["get", d.kumactl_arg, name, "-m", mesh, "-o", "yaml"])
            .ok();
        let got: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(got["type"], value["type"], "{ctx}");
        assert_eq!(got["name"], value["name"], "{ctx}");

        let file = k.file("round-trip.yaml", &yaml);
        let reapplied = k.run(&["apply", "-f", &file]);
        assert_eq!(reapplied.code, 0, "{ctx}: {reapplied:#?}");
        assert!(
            reapplied.stdout.ends_with(" Updated\n"),
            "{ctx}: {reapplied:#?}"
        );
        let again: serde_yaml::Value = serde_yaml::from_str(
            &k.run(&["get", d.kumactl_arg, name, "-m", mesh, "-o", "yaml"])
                .ok(),
        )
        .unwrap();
        let content = |v: &serde_yaml::Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_mapping_mut() {
                m.remove("modificationTime");
            }
            v
        };
        assert_eq!(
            content(&again),
            content(&got),
            "{ctx}: re-applying its own yaml changed it"
        );
    }

    // Delete in reverse: meshes last.
    for (path, value) in ordered.iter().rev() {
        let kind = ResourceKind::from_name(value["type"].as_str().unwrap()).unwrap();
        let d = kind.descriptor();
        let name = value["name"].as_str().unwrap();
        let mesh = value["mesh"].as_str().unwrap_or("default");
        let out = k.run(&["delete", d.kumactl_arg, name, "-m", mesh]);
        assert_eq!(out.code, 0, "{}: {out:#?}", path.display());
        assert_eq!(out.stdout, format!("deleted {} {name:?}\n", d.name));
        let gone = k.run(&["get", d.kumactl_arg, name, "-m", mesh]).fails();
        assert!(gone.contains("No resources found"), "{gone}");
    }
}

#[test]
fn apply_dry_run_invalid_resources_and_syntax_errors() {
    let cp = ControlPlane::start();
    let k = Kumactl::for_cp(&cp);

    // --dry-run prints the rendered resources and writes nothing.
    let meshes = k.file("meshes.yaml", MESHES);
    let out = k
        .run(&["apply", "-f", &meshes, "-v", "second=dry", "--dry-run"])
        .ok();
    assert_eq!(
        out,
        "type: Mesh\nname: payments\n---\ntype: Mesh\nname: dry\n"
    );
    let err = k.run(&["get", "mesh", "dry"]).fails();
    assert_eq!(err, "Error: No resources found\n");
    assert_golden(
        "get-meshes-default-only.txt",
        &normalise_ages(&k.run(&["get", "meshes"]).ok()),
    );

    // An invalid resource: exit 1, type/mesh/name, each field and reason.
    let bad = k.file(
        "bad.yaml",
        "type: MeshTimeout\nname: bad\nmesh: default\nspec:\n  targetRef:\n    kind: Bogus\n  to:\n    - targetRef:\n        kind: Mesh\n      default:\n        idleTimeout: 1s\n",
    );
    let err = k.run(&["apply", "-f", &bad]).fails();
    assert!(
        err.starts_with(&format!("Error: MeshTimeout/default/bad ({bad}:1): ")),
        "{err}"
    );
    assert!(
        err.contains("\n* spec.targetRef.kind: value 'Bogus' is not supported"),
        "{err}"
    );
    assert_eq!(
        k.run(&["get", "meshtimeouts"]).ok(),
        "MESH   NAME   AGE\n",
        "nothing written"
    );

    // A YAML syntax error names the file and the line, before any request.
    let broken = k.file(
        "broken.yaml",
        "type: Mesh\nname: fine\n---\ntype: Mesh\nname: [unclosed\n",
    );
    let err = k.run(&["apply", "-f", &broken]).fails();
    assert!(err.contains(&format!("{broken}:")), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("resource[1]") && l.contains("line ")),
        "{err}"
    );
    k.run(&["get", "mesh", "fine"]).fails();

    // Applying the same resource again (-v and --var spellings) says Updated.
    let one = k.file("one.yaml", "type: Mesh\nname: {{ n }}\n");
    k.run(&["apply", "-f", &one, "-v", "n=twice"]).ok();
    let out = k.run(&["apply", "-f", &one, "--var", "n=twice"]).ok();
    assert_eq!(
        out,
        "resource type=\"Mesh\" mesh=\"\" name=\"twice\" Updated\n"
    );
}

#[test]
fn delete_of_a_missing_resource_fails_clearly() {
    let cp = ControlPlane::start();
    let k = Kumactl::for_cp(&cp);
    let err = k.run(&["delete", "meshtimeout", "nope"]).fails();
    assert_eq!(
        err,
        "Error: there is no MeshTimeout with name \"nope\" in mesh \"default\"\n"
    );
    let err = k.run(&["delete", "zone", "nope"]).fails();
    assert_eq!(err, "Error: there is no Zone with name \"nope\"\n");
    let err = k.run(&["delete", "bogus", "x"]).fails();
    assert!(err.contains("unknown resource type \"bogus\""), "{err}");
}

#[test]
fn inspect_meshes_dataplanes_services_and_zones() {
    let cp = ControlPlane::start();
    let k = Kumactl::for_cp(&cp);
    seed(&k);
    for (args, golden) in [
        (&["inspect", "meshes"][..], "inspect-meshes.txt"),
        (&["inspect", "dataplanes"][..], "inspect-dataplanes.txt"),
        (&["inspect", "services"][..], "inspect-services.txt"),
        (&["inspect", "zones"][..], "inspect-zones.txt"),
    ] {
        let out = k.run(args).ok();
        assert_golden(golden, &out);
    }
    let json: serde_json::Value =
        serde_json::from_str(&k.run(&["inspect", "dataplanes", "-o", "json"]).ok()).unwrap();
    assert_eq!(json["total"], 3);
    assert_eq!(json["items"][0]["type"], "DataplaneOverview");
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&k.run(&["inspect", "meshes", "-o", "yaml"]).ok()).unwrap();
    assert_eq!(yaml["items"][1]["name"], "payments");
}

#[test]
fn inspect_one_dataplane_config_and_rules() {
    let cp = ControlPlane::start();
    let k = Kumactl::for_cp(&cp);
    seed(&k);
    let config: serde_json::Value =
        serde_json::from_str(&k.run(&["inspect", "dataplane", "web-1"]).ok()).unwrap();
    assert_eq!(config["name"], "web-1");
    assert!(
        config["xds"]["listeners"]
            .as_array()
            .is_some_and(|l| !l.is_empty()),
        "{config}"
    );
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &k.run(&[
            "inspect",
            "dataplane",
            "web-1",
            "--type",
            "rules",
            "-o",
            "yaml",
        ])
        .ok(),
    )
    .unwrap();
    assert_eq!(rules["rules"][0]["type"], "MeshTimeout");
    let err = k
        .run(&["inspect", "dataplane", "nope", "--type", "config"])
        .fails();
    assert!(
        err.contains("there is no Dataplane with name \"nope\""),
        "{err}"
    );
    let err = k
        .run(&["inspect", "dataplane", "web-1", "--type", "config-dump"])
        .fails();
    assert!(err.contains("--type=config-dump is not served"), "{err}");
}
