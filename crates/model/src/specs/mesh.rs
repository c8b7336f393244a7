//! Mesh: an isolated group of proxies and the policies that apply to them.
//! An inline kind. In Kuma 3.x mTLS, tracing, logging and metrics moved to
//! MeshIdentity/MeshTrust and the Mesh* policies, so little is left here.

use super::common::dns1035_label;
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A service mesh.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mesh {
    /// Default policies not to create with the mesh; `["*"]` skips them all.
    #[serde(
        default,
        alias = "skip_creating_initial_policies",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub skip_creating_initial_policies: Vec<String>,
}

impl Spec for Mesh {
    fn validate(&self, ctx: &Context<'_>, _: &Path, errs: &mut Violations) {
        // Mesh names end up in DNS names and SPIFFE IDs.
        if !ctx.name.is_empty()
            && let Err(e) = dns1035_label(ctx.name)
        {
            errs.add("name", e);
        }
        for (i, p) in self.skip_creating_initial_policies.iter().enumerate() {
            if p.is_empty() {
                errs.at(
                    &Path::root("skipCreatingInitialPolicies").index(i),
                    "must not be empty",
                );
            }
        }
    }
}
