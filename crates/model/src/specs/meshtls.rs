//! MeshTLS: TLS mode, versions and ciphers for inbound mTLS.

use super::common::{TOP_MESH_DP, TargetRef, TargetRefKind};
use super::policy::{check_rules, len, top_level};
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// TLS settings for the selected proxies' inbounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTLS {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<MeshTLSRule>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTLSRule {
    #[serde(default)]
    pub default: MeshTLSConf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsMode {
    /// Only mTLS traffic is accepted.
    Strict,
    /// Both mTLS and plaintext traffic are accepted.
    Permissive,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum TlsVersion {
    TLSAuto,
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsVersionRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<TlsVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<TlsVersion>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsCipher {
    #[serde(rename = "ECDHE-ECDSA-AES128-GCM-SHA256")]
    EcdheEcdsaAes128GcmSha256,
    #[serde(rename = "ECDHE-ECDSA-AES256-GCM-SHA384")]
    EcdheEcdsaAes256GcmSha384,
    #[serde(rename = "ECDHE-ECDSA-CHACHA20-POLY1305")]
    EcdheEcdsaChacha20Poly1305,
    #[serde(rename = "ECDHE-RSA-AES128-GCM-SHA256")]
    EcdheRsaAes128GcmSha256,
    #[serde(rename = "ECDHE-RSA-AES256-GCM-SHA384")]
    EcdheRsaAes256GcmSha384,
    #[serde(rename = "ECDHE-RSA-CHACHA20-POLY1305")]
    EcdheRsaChacha20Poly1305,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTLSConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<TlsVersionRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ciphers: Option<Vec<TlsCipher>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
}

/// Checks a TLS version range: min must not exceed max (TLSAuto is open).
pub fn validate_tls_version(v: &TlsVersionRange, path: &Path, errs: &mut Violations) {
    if let (Some(min), Some(max)) = (v.min, v.max)
        && min != TlsVersion::TLSAuto
        && max != TlsVersion::TLSAuto
        && min > max
    {
        errs.at(&path.field("min"), "min version must be lower than max");
    }
}

impl Spec for MeshTLS {
    fn validate(&self, _: &Context<'_>, path: &Path, errs: &mut Violations) {
        top_level(
            &self.target_ref,
            TOP_MESH_DP,
            len(&self.rules) > 0,
            path,
            errs,
        );
        let top = TargetRef::kind_or_mesh(&self.target_ref);
        check_rules(&self.rules, path, errs, |r, p, errs| {
            let p = p.field("default");
            if r.default
                .tls_ciphers
                .as_ref()
                .is_some_and(|c| !c.is_empty())
                && top != TargetRefKind::Mesh
            {
                errs.at(
                    &p.field("tlsCiphers"),
                    "tlsCiphers can only be defined with top level targetRef kind: Mesh",
                );
            }
            if let Some(v) = &r.default.tls_version {
                if top != TargetRefKind::Mesh {
                    errs.at(
                        &p.field("tlsVersion"),
                        "tlsVersion can only be defined with top level targetRef kind: Mesh",
                    );
                }
                validate_tls_version(v, &p.field("tlsVersion"), errs);
            }
        });
    }
}
