//! MeshProxyPatch: low-level modifications of the generated Envoy resources.

use super::common::{TOP_MESH_DP, TargetRef};
use super::policy::top_level;
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Envoy config patches for the selected proxies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshProxyPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    pub default: MeshProxyPatchConf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshProxyPatchConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_modifications: Option<Vec<Modification>>,
}

/// Exactly one of the fields is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Modification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ResourceMod<ClusterMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<ResourceMod<ListenerMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_filter: Option<ResourceMod<FilterMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_filter: Option<ResourceMod<FilterMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_host: Option<ResourceMod<VirtualHostMatch>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ModOperation {
    Add,
    Remove,
    Patch,
    AddFirst,
    AddLast,
    AddBefore,
    AddAfter,
}

/// One modification of an Envoy resource of some type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceMod<M> {
    /// Which existing resources the operation applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<M>,
    pub operation: ModOperation,
    /// Envoy resource in YAML, for Add and Patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// RFC 6902 JSON patches, for Patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_patches: Option<Vec<JsonPatchBlock>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_tags: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualHostMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_configuration_name: Option<String>,
}

/// One RFC 6902 operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonPatchBlock {
    /// add, remove, replace, move, copy or test.
    pub op: String,
    pub path: String,
    /// Any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

const JSON_PATCH_OPS: &[&str] = &["add", "remove", "replace", "move", "copy", "test"];

impl Spec for MeshProxyPatch {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        top_level(&self.target_ref, TOP_MESH_DP, false, path, errs);
        let p = path.field("default").field("appendModifications");
        let mods = self
            .default
            .append_modifications
            .as_deref()
            .unwrap_or_default();
        if mods.is_empty() {
            errs.at(&p, "must not be empty");
        }
        for (i, m) in mods.iter().enumerate() {
            let mp = p.index(i);
            let set = [
                m.cluster.is_some(),
                m.listener.is_some(),
                m.network_filter.is_some(),
                m.http_filter.is_some(),
                m.virtual_host.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if set != 1 {
                errs.at(&mp, "modification must have exactly one defined: cluster, listener, networkFilter, httpFilter, virtualHost");
            }
            if let Some(c) = &m.cluster {
                resource_mod(c, c.r#match.is_some(), None, &mp.field("cluster"), errs);
            }
            if let Some(l) = &m.listener {
                resource_mod(l, l.r#match.is_some(), None, &mp.field("listener"), errs);
            }
            if let Some(v) = &m.virtual_host {
                let name = v.r#match.as_ref().and_then(|m| m.name.as_ref());
                resource_mod(v, name.is_some(), None, &mp.field("virtualHost"), errs);
            }
            for (field, f) in [
                ("networkFilter", &m.network_filter),
                ("httpFilter", &m.http_filter),
            ] {
                if let Some(f) = f {
                    let name = f.r#match.as_ref().and_then(|m| m.name.clone());
                    resource_mod(f, false, Some(name), &mp.field(field), errs);
                }
            }
        }
    }
}

/// `filter_name` is `Some` for filter modifications (which support ordering
/// operations and need a match name for AddBefore/AddAfter).
fn resource_mod<M>(
    m: &ResourceMod<M>,
    match_on_add: bool,
    filter_name: Option<Option<String>>,
    path: &Path,
    errs: &mut Violations,
) {
    let is_filter = filter_name.is_some();
    match m.operation {
        ModOperation::Add
        | ModOperation::AddFirst
        | ModOperation::AddLast
        | ModOperation::AddBefore
        | ModOperation::AddAfter => {
            let ordered = !matches!(m.operation, ModOperation::Add);
            if ordered && !is_filter {
                errs.at(
                    &path.field("operation"),
                    "invalid operation. Available: Add, Patch, Remove",
                );
            }
            if !ordered && is_filter {
                errs.at(&path.field("operation"), "invalid operation. Available: AddFirst, AddLast, AddBefore, AddAfter, Patch, Remove");
            }
            if match_on_add {
                errs.at(&path.field("match"), "must not be defined");
            }
            if matches!(
                m.operation,
                ModOperation::AddBefore | ModOperation::AddAfter
            ) && filter_name.as_ref().is_some_and(|n| n.is_none())
            {
                errs.at(&path.field("match").field("name"), "must be defined");
            }
            if m.value.as_deref().unwrap_or_default().is_empty() {
                errs.at(&path.field("value"), "must be defined");
            }
        }
        ModOperation::Remove => {
            if m.value.is_some() {
                errs.at(&path.field("value"), "must not be defined");
            }
        }
        ModOperation::Patch => {
            if m.value.is_none() && m.json_patches.is_none() {
                errs.at(path, "must have at least one defined: value, jsonPatches");
            }
            for (i, jp) in m.json_patches.iter().flatten().enumerate() {
                if !JSON_PATCH_OPS.contains(&jp.op.as_str()) {
                    errs.at(
                        &path.field("jsonPatches").index(i).field("op"),
                        format!("must be one of: {}", JSON_PATCH_OPS.join(", ")),
                    );
                }
            }
        }
    }
}
