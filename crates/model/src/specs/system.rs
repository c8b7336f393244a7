//! System kinds: Zone, Secret and GlobalSecret. Inline kinds: fields sit at
//! the top level of the resource JSON.

use super::common::dns1035_label;
use super::{Context, Spec};
use crate::validate::{Path, Violations};
use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// A zone known to the global control plane.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Zone {
    /// A disabled zone's control plane is refused on KDS. Enabled when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl Zone {
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

impl Spec for Zone {
    fn validate(&self, ctx: &Context<'_>, _: &Path, errs: &mut Violations) {
        // Zone names become parts of DNS names and KDS identities.
        if !ctx.name.is_empty()
            && let Err(e) = dns1035_label(ctx.name)
        {
            errs.add("name", e);
        }
    }
}

/// Secret content. Kuma's REST API carries `data` as a base64 string; the
/// protobuf wrapper form `{"value": "<base64>"}` is accepted on input too.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    /// The secret bytes, base64-encoded.
    pub data: String,
}

/// A secret readable from every mesh (zone tokens' signing keys, CA certs...).
pub type GlobalSecret = Secret;

impl Secret {
    /// The decoded bytes (validation guarantees they decode).
    pub fn bytes(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Data {
            Plain(String),
            Wrapped { value: String },
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            data: Option<Data>,
        }
        let raw = Raw::deserialize(d)?;
        let data = match raw.data {
            None => String::new(),
            Some(Data::Plain(s)) | Some(Data::Wrapped { value: s }) => s,
        };
        Ok(Secret { data })
    }
}

impl Spec for Secret {
    fn validate(&self, _: &Context<'_>, root: &Path, errs: &mut Violations) {
        let p = root.field("data");
        if self.data.is_empty() {
            errs.at(&p, "cannot be empty");
        } else if base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .is_err()
        {
            errs.at(&p, "must be valid base64");
        }
    }
}
