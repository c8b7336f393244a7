//! Every fixture under `tests/fixtures/` goes through the same path a REST
//! write does: envelope (`ResourceInput::from_kuma_json`), then
//! `specs::validate`.
//!
//! * `valid/*.yaml` must pass, and their canonical form must validate to itself.
//! * `invalid/*.yaml` must fail with exactly the fields listed in the file's
//!   leading `# expect: <field>` comment lines (order-insensitive).

use kuma_model::resource::ResourceInput;
use kuma_model::specs::{self, Context};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> (String, serde_json::Value) {
    let text = std::fs::read_to_string(path).expect("read fixture");
    let value: serde_json::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (text, value)
}

/// Runs the envelope and spec validation; returns the canonical spec or the
/// violated fields.
fn run(value: serde_json::Value) -> Result<(ResourceInput, serde_json::Value), Vec<String>> {
    let fields = |v: kuma_model::Violations| {
        v.into_vec()
            .into_iter()
            .map(|v| v.field)
            .collect::<Vec<_>>()
    };
    let input = ResourceInput::from_kuma_json(value, None).map_err(fields)?;
    let labels: BTreeMap<String, String> = input.labels.clone();
    let ctx = Context {
        kind: input.kind,
        mesh: input.mesh.as_deref(),
        name: input.name.as_deref().unwrap_or(""),
        labels: &labels,
    };
    let canonical = specs::validate(&ctx, &input.spec).map_err(fields)?;
    Ok((input, canonical))
}

#[test]
fn valid_fixtures_pass_and_round_trip() {
    let files = fixtures("valid");
    assert!(
        files.len() >= 3,
        "expected the full fixture set, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in files {
        let (_, value) = load(&path);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let kind_prefix = name
            .rsplit_once('-')
            .map(|(k, _)| k.to_string())
            .unwrap_or_default();
        match run(value.clone()) {
            Err(fields) => failures.push(format!("{name}: rejected at {fields:?}")),
            Ok((input, canonical)) => {
                assert_eq!(
                    input.kind.name().to_ascii_lowercase(),
                    kind_prefix,
                    "{name}: file name must start with the kind"
                );
                if input.kind.scope() == kuma_model::Scope::Mesh {
                    assert_eq!(
                        input.mesh.as_deref(),
                        Some("default"),
                        "{name}: fixtures live in mesh default"
                    );
                }
                let again = specs::validate(
                    &Context {
                        kind: input.kind,
                        mesh: input.mesh.as_deref(),
                        name: input.name.as_deref().unwrap_or(""),
                        labels: &input.labels,
                    },
                    &canonical,
                );
                match again {
                    Ok(v) if v == canonical => {}
                    Ok(v) => failures.push(format!(
                        "{name}: canonical form is not stable: {canonical} -> {v}"
                    )),
                    Err(e) => failures.push(format!("{name}: canonical form rejected: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_fixtures_fail_at_the_expected_fields() {
    let files = fixtures("invalid");
    assert!(
        files.len() >= 40,
        "expected the full fixture set, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in files {
        let (text, value) = load(&path);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let mut expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|s| s.trim().to_string())
            .collect();
        assert!(
            !expected.is_empty(),
            "{name}: needs at least one `# expect: <field>` line"
        );
        expected.sort();
        match run(value) {
            Ok(_) => failures.push(format!(
                "{name}: accepted, expected violations at {expected:?}"
            )),
            Err(mut fields) => {
                fields.sort();
                if fields != expected {
                    failures.push(format!(
                        "{name}: violations at {fields:?}, expected {expected:?}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
