//! MeshTrafficPermission: which clients (by SPIFFE ID or SNI) may reach the
//! selected proxies.

use super::common::{Match, TOP_MESH_DP, TargetRef, validate_matches};
use super::policy::{check_rules, len, top_level};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Access control for inbound traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTrafficPermission {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<MeshTrafficPermissionRule>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTrafficPermissionRule {
    pub default: MeshTrafficPermissionConf,
}

/// Deny wins over allowWithShadowDeny, which wins over allow.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTrafficPermissionConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<Match>>,
    /// Allowed, but logged as if denied (to try a deny before enforcing it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_with_shadow_deny: Option<Vec<Match>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<Match>>,
}

impl Spec for MeshTrafficPermission {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        top_level(
            &self.target_ref,
            TOP_MESH_DP,
            len(&self.rules) > 0,
            path,
            errs,
        );
        if len(&self.rules) == 0 {
            errs.at(path, "policy must define rules");
        }
        check_rules(&self.rules, path, errs, |r, p, errs| {
            let d = &r.default;
            let p = p.field("default");
            if len(&d.deny) == 0 && len(&d.allow_with_shadow_deny) == 0 && len(&d.allow) == 0 {
                errs.at(
                    &p,
                    "at least one of 'allow', 'allowWithShadowDeny', 'deny' has to be defined",
                );
            }
            validate_matches(&d.deny, &p.field("deny"), errs);
            validate_matches(
                &d.allow_with_shadow_deny,
                &p.field("allowWithShadowDeny"),
                errs,
            );
            validate_matches(&d.allow, &p.field("allow"), errs);
        });
    }
}
