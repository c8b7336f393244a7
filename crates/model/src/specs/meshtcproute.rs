//! MeshTCPRoute: weighted TCP traffic splitting and redirection.

use super::common::{BACKEND_KINDS, BackendRef, TOP_MESH_DP, TargetRef, validate_backend_ref};
use super::policy::{check_to, top_level};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// TCP routes for traffic to the selected destinations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTCPRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<MeshTCPRouteTo>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTCPRouteTo {
    pub target_ref: TargetRef,
    pub rules: Vec<TcpRouteRule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteRule {
    pub default: TcpRouteConf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<BackendRef>>,
}

impl Spec for MeshTCPRoute {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        top_level(&self.target_ref, TOP_MESH_DP, false, path, errs);
        check_to(
            &self.to,
            BACKEND_KINDS,
            path,
            errs,
            |t| &t.target_ref,
            |_, _, _| {},
        );
        for (i, to) in self.to.iter().flatten().enumerate() {
            for (j, rule) in to.rules.iter().enumerate() {
                let p = path
                    .field("to")
                    .index(i)
                    .field("rules")
                    .index(j)
                    .field("default")
                    .field("backendRefs");
                match &rule.default.backend_refs {
                    None => errs.at(&p, "must be defined"),
                    Some(refs) => {
                        for (k, r) in refs.iter().enumerate() {
                            validate_backend_ref(r, &p.index(k), errs);
                        }
                    }
                }
            }
        }
    }
}
