//! mTLS identity: MeshIdentity (how proxies get SPIFFE certificates) and
//! MeshTrust (which CA bundles a trust domain is verified with).

use super::common::{Duration, LabelSelector, SecureDataSource, validate_secure_data_source};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Issues SPIFFE identities to the selected dataplanes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<IdentitySelector>,
    #[serde(rename = "spiffeID", default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<SpiffeIdTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentitySelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<LabelSelector>,
}

/// Templates (`{{ .Mesh }}.{{ .Zone }}.mesh.local`, `/ns/{{ .Namespace }}/sa/{{ label "app" }}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpiffeIdTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProviderType {
    Bundled,
    Spire,
    Extension,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provider {
    #[serde(rename = "type")]
    pub type_: ProviderType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundled: Option<Bundled>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spire: Option<Spire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<ProviderExtension>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MeshTrustCreation {
    Enabled,
    Disabled,
}

/// A CA run by the control plane itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bundled {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_trust_creation: Option<MeshTrustCreation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_allow_self_signed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autogenerate: Option<Autogenerate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_parameters: Option<CertificateParameters>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autogenerate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<SecureDataSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<SecureDataSource>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateParameters {
    /// Lifetime of issued certificates, e.g. `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<SpireAgent>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpireAgent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderExtension {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
}

/// A condition the control plane reports on a resource (Kubernetes style).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type", default)]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Status of a MeshIdentity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshIdentityStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Checks `{{ ... }}` blocks are balanced and use only known fields/functions.
pub(crate) fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("couldn't parse template: unclosed action".into());
        };
        let action = after[..end].trim();
        let known = matches!(
            action,
            ".Name"
                | ".DisplayName"
                | ".Namespace"
                | ".Mesh"
                | ".Zone"
                | ".ServiceAccount"
                | ".Workload"
        ) || (action.starts_with("label ")
            && action[6..].trim().starts_with('"')
            && action.ends_with('"'));
        if !known {
            return Err(format!(
                "couldn't parse template: unsupported action {{{{ {action} }}}}"
            ));
        }
        rest = &after[end + 2..];
    }
    if rest.contains("}}") {
        return Err("couldn't parse template: unexpected \"}}\"".into());
    }
    Ok(())
}

impl Spec for MeshIdentity {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        if let Some(s) = &self.spiffe_id {
            for (name, v) in [("trustDomain", &s.trust_domain), ("path", &s.path)] {
                if let Some(v) = v
                    && let Err(e) = check_template(v)
                {
                    errs.at(&path.field("spiffeID").field(name), e);
                }
            }
        }
        let Some(p) = &self.provider else { return };
        let pp = path.field("provider");
        match p.type_ {
            ProviderType::Bundled => {
                let bp = pp.field("bundled");
                let Some(b) = &p.bundled else {
                    errs.at(&bp, "configuration needs to be defined");
                    return;
                };
                let auto = b
                    .autogenerate
                    .as_ref()
                    .and_then(|a| a.enabled)
                    .unwrap_or(false);
                if auto {
                    if b.ca.is_some() {
                        errs.at(
                            &bp.field("ca"),
                            "shouldn't be defined once using autogenerated",
                        );
                    }
                } else {
                    match &b.ca {
                        None => errs.at(&bp.field("ca"), "must be defined"),
                        Some(ca) => {
                            for (name, s) in [
                                ("certificate", &ca.certificate),
                                ("privateKey", &ca.private_key),
                            ] {
                                match s {
                                    None => errs.at(&bp.field("ca").field(name), "must be defined"),
                                    Some(s) => validate_secure_data_source(
                                        s,
                                        &bp.field("ca").field(name),
                                        errs,
                                    ),
                                }
                            }
                        }
                    }
                }
                if let Some(exp) = b
                    .certificate_parameters
                    .as_ref()
                    .and_then(|c| c.expiry.as_ref())
                    && exp.is_negative()
                {
                    errs.at(
                        &bp.field("certificateParameters").field("expiry"),
                        "must not be negative when defined",
                    );
                }
            }
            ProviderType::Spire => match &p.spire {
                None => errs.at(&pp.field("spire"), "configuration needs to be defined"),
                Some(s) => {
                    if let Some(t) = s.agent.as_ref().and_then(|a| a.timeout.as_ref())
                        && t.nanos() <= 0
                    {
                        errs.at(
                            &pp.field("spire").field("agent").field("timeout"),
                            "must be greater than zero when defined",
                        );
                    }
                }
            },
            ProviderType::Extension => match &p.extension {
                None => errs.at(&pp.field("extension"), "configuration needs to be defined"),
                Some(e) if e.name.is_empty() => errs.at(
                    &pp.field("extension").field("name"),
                    "extension name needs to be defined",
                ),
                Some(_) => {}
            },
        }
    }
}

// ---------------------------------------------------------------------------
// MeshTrust
// ---------------------------------------------------------------------------

/// CA bundles that verify identities of one trust domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTrust {
    #[serde(default)]
    pub trust_domain: String,
    #[serde(default)]
    pub ca_bundles: Vec<CaBundle>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CaBundleType {
    Pem,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaBundle {
    #[serde(rename = "type")]
    pub type_: CaBundleType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<Pem>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pem {
    /// PEM-encoded CA certificate(s).
    pub value: String,
}

/// Status of a MeshTrust.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshTrustStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<MeshTrustOrigin>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshTrustOrigin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kri: Option<String>,
}

/// True when `s` starts with a PEM block holding a certificate (not a key)
/// whose body is valid base64.
pub fn is_pem_certificate(s: &str) -> bool {
    let s = s.trim_start();
    let Some(rest) = s.strip_prefix("-----BEGIN ") else {
        return false;
    };
    let Some((label, rest)) = rest.split_once("-----") else {
        return false;
    };
    if label.contains("PRIVATE KEY") {
        return false;
    }
    let end = format!("-----END {label}-----");
    let Some((body, _)) = rest.split_once(&end) else {
        return false;
    };
    let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    !body.is_empty()
        && base64::engine::general_purpose::STANDARD
            .decode(body)
            .is_ok()
}

impl Spec for MeshTrust {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        let bp = path.field("caBundles");
        if self.ca_bundles.is_empty() {
            errs.at(&bp, "must not be empty");
        }
        for (i, b) in self.ca_bundles.iter().enumerate() {
            let p = bp.index(i).field("pem");
            match &b.pem {
                None => errs.at(&p, "must be defined"),
                Some(pem) if !is_pem_certificate(&pem.value) => errs.at(
                    &p.field("value"),
                    "provided certificate has incorrect format",
                ),
                Some(_) => {}
            }
        }
        let td = path.field("trustDomain");
        if self.trust_domain.is_empty() {
            errs.at(&td, "trustDomain needs to be defined");
        }
        if self.trust_domain.len() > 253 {
            errs.at(&td, "must not be longer than 253 characters");
        }
    }
}
