//! Validated names. A value of these types is always a name Kuma would accept,
//! so nothing downstream re-checks it.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::sync::LazyLock;

static IDENTIFIER: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        .expect("static regex")
});
static MESH_REFERENCE: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^[0-9a-z\-_.]*$").expect("static regex"));

/// Why a name was refused; the message is Kuma's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("cannot be empty")]
    Empty,
    #[error("value length must less or equal 253")]
    TooLong,
    #[error(
        "invalid characters. A lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
    )]
    NotIdentifier,
    #[error(
        "invalid characters. Valid characters are numbers, lowercase latin letters and '-', '_', '.' symbols."
    )]
    NotMeshReference,
}

fn check(s: &str, re: &regex::Regex, err: NameError) -> Result<(), NameError> {
    if s.is_empty() {
        Err(NameError::Empty)
    } else if s.len() > 253 {
        Err(NameError::TooLong)
    } else if !re.is_match(s) {
        Err(err)
    } else {
        Ok(())
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $re:ident, $err:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                check(&s, &$re, $err)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The name of a resource: a lowercase RFC 1123 subdomain of at most 253 characters.
    ResourceName,
    IDENTIFIER,
    NameError::NotIdentifier
);

name_type!(
    /// A reference to a mesh. Kuma still accepts `_` here because meshes created
    /// by older versions may carry it.
    MeshName,
    MESH_REFERENCE,
    NameError::NotMeshReference
);

impl MeshName {
    /// The mesh every fresh control plane creates.
    pub fn default_mesh() -> MeshName {
        MeshName("default".to_string())
    }
}

impl From<ResourceName> for MeshName {
    fn from(n: ResourceName) -> Self {
        // Every RFC 1123 subdomain is also a valid mesh reference.
        MeshName(n.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names() {
        assert!(ResourceName::new("backend-1.default").is_ok());
        assert_eq!(ResourceName::new(""), Err(NameError::Empty));
        assert_eq!(ResourceName::new("Backend"), Err(NameError::NotIdentifier));
        assert_eq!(ResourceName::new("a_b"), Err(NameError::NotIdentifier));
        assert_eq!(ResourceName::new("-a"), Err(NameError::NotIdentifier));
        assert_eq!(ResourceName::new("a".repeat(254)), Err(NameError::TooLong));
    }

    #[test]
    fn mesh_names_allow_underscore() {
        assert!(MeshName::new("old_mesh").is_ok());
        assert_eq!(MeshName::new("Mesh"), Err(NameError::NotMeshReference));
        let n: Result<MeshName, _> = serde_json::from_str("\"BAD\"");
        assert!(n.is_err());
    }
}
