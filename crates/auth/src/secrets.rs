//! Names of the secrets that hold signing keys, revocation lists and the admin
//! token, exactly as Kuma names them, and the revocation list's format.
//!
//! | owner | signing keys | revocations |
//! |---|---|---|
//! | user tokens | GlobalSecret `user-token-signing-key-<serial>` | GlobalSecret `user-token-revocations` |
//! | zone tokens | GlobalSecret `zone-token-signing-key-<serial>` | GlobalSecret `zone-token-revocations` |
//! | dataplane tokens of mesh M | Secret `dataplane-token-signing-key-M-<serial>` in M | Secret `dataplane-token-revocations-M` in M |
//!
//! A signing-key secret named with no serial suffix is Kuma 1.3's single key and
//! has serial 0.

use std::collections::BTreeSet;

use crate::keys::KeySerial;

/// GlobalSecret holding the admin user token the control plane bootstraps.
pub const ADMIN_USER_TOKEN_SECRET: &str = "admin-user-token";
/// Prefix of the GlobalSecrets holding user-token signing keys.
pub const USER_TOKEN_SIGNING_KEY_PREFIX: &str = "user-token-signing-key";
/// GlobalSecret listing revoked user tokens.
pub const USER_TOKEN_REVOCATIONS: &str = "user-token-revocations";
/// Prefix of the GlobalSecrets holding zone-token signing keys.
pub const ZONE_TOKEN_SIGNING_KEY_PREFIX: &str = "zone-token-signing-key";
/// Prefix of the GlobalSecrets holding zone-token public keys (a global CP that
/// issues zone tokens offline publishes only the public half).
pub const ZONE_TOKEN_SIGNING_PUBLIC_KEY_PREFIX: &str = "zone-token-signing-public-key";
/// GlobalSecret listing revoked zone tokens.
pub const ZONE_TOKEN_REVOCATIONS: &str = "zone-token-revocations";
/// Prefix (before the mesh name) of the Secrets holding dataplane-token signing keys.
pub const DATAPLANE_TOKEN_SIGNING_KEY_PREFIX: &str = "dataplane-token-signing-key-";
/// Prefix (before the mesh name) of the Secret listing revoked dataplane tokens.
pub const DATAPLANE_TOKEN_REVOCATIONS_PREFIX: &str = "dataplane-token-revocations-";

/// Where a secret lives: a GlobalSecret, or a Secret in a mesh.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// A `GlobalSecret` (`/global-secrets/{name}`).
    Global {
        /// Secret name.
        name: String,
    },
    /// A `Secret` in a mesh (`/meshes/{mesh}/secrets/{name}`).
    Mesh {
        /// The mesh holding it.
        mesh: String,
        /// Secret name.
        name: String,
    },
}

impl SecretRef {
    /// The secret's name.
    pub fn name(&self) -> &str {
        match self {
            SecretRef::Global { name } | SecretRef::Mesh { name, .. } => name,
        }
    }

    /// The mesh of a mesh-scoped secret, `None` for a GlobalSecret.
    pub fn mesh(&self) -> Option<&str> {
        match self {
            SecretRef::Global { .. } => None,
            SecretRef::Mesh { mesh, .. } => Some(mesh),
        }
    }
}

/// Whose tokens a set of signing keys signs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyOwner {
    /// User tokens for the API server (global keys).
    User,
    /// Zone tokens that zone CPs present to the global CP (global keys).
    Zone,
    /// Dataplane tokens of one mesh (keys live in that mesh).
    Dataplane {
        /// The mesh.
        mesh: String,
    },
}

impl KeyOwner {
    /// Dataplane-token keys of `mesh`.
    pub fn dataplane(mesh: impl Into<String>) -> Self {
        KeyOwner::Dataplane { mesh: mesh.into() }
    }

    /// The signing-key name prefix, as Kuma builds it (`SigningKeyResourceKey`).
    pub fn signing_key_prefix(&self) -> String {
        match self {
            KeyOwner::User => USER_TOKEN_SIGNING_KEY_PREFIX.to_owned(),
            KeyOwner::Zone => ZONE_TOKEN_SIGNING_KEY_PREFIX.to_owned(),
            KeyOwner::Dataplane { mesh } => format!("{DATAPLANE_TOKEN_SIGNING_KEY_PREFIX}{mesh}"),
        }
    }

    /// The secret holding the signing key with this serial. Serial 0 is the
    /// legacy unsuffixed name.
    pub fn signing_key_secret(&self, serial: KeySerial) -> SecretRef {
        let prefix = self.signing_key_prefix();
        let name = if serial == KeySerial::LEGACY {
            prefix
        } else {
            format!("{prefix}-{serial}")
        };
        self.scoped(name)
    }

    /// The serial of a signing-key secret of this owner, or `None` when the name
    /// is not one of this owner's signing keys. `-0002` reads as serial 2.
    pub fn signing_key_serial(&self, secret_name: &str) -> Option<KeySerial> {
        let prefix = self.signing_key_prefix();
        let rest = secret_name.strip_prefix(prefix.as_str())?;
        if rest.is_empty() {
            return Some(KeySerial::LEGACY);
        }
        rest.strip_prefix('-')?.parse().ok()
    }

    /// The secret listing this owner's revoked token ids.
    pub fn revocations_secret(&self) -> SecretRef {
        match self {
            KeyOwner::User => self.scoped(USER_TOKEN_REVOCATIONS.to_owned()),
            KeyOwner::Zone => self.scoped(ZONE_TOKEN_REVOCATIONS.to_owned()),
            KeyOwner::Dataplane { mesh } => {
                self.scoped(format!("{DATAPLANE_TOKEN_REVOCATIONS_PREFIX}{mesh}"))
            }
        }
    }

    fn scoped(&self, name: String) -> SecretRef {
        match self {
            KeyOwner::User | KeyOwner::Zone => SecretRef::Global { name },
            KeyOwner::Dataplane { mesh } => SecretRef::Mesh {
                mesh: mesh.clone(),
                name,
            },
        }
    }
}

/// Ids (`jti`) of revoked tokens. Kuma stores them in the revocation secret's data
/// as `id1,id2,...`, optionally newline-terminated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    ids: BTreeSet<String>,
}

impl Revocations {
    /// Nothing revoked (no revocation secret).
    pub fn none() -> Self {
        Revocations::default()
    }

    /// Reads a revocation secret's data. Blank entries are ignored.
    pub fn parse(data: &[u8]) -> Self {
        let text = String::from_utf8_lossy(data);
        let ids = text
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect();
        Revocations { ids }
    }

    /// Revokes one more token id.
    pub fn insert(&mut self, id: impl Into<String>) {
        self.ids.insert(id.into());
    }

    /// True when the token with this id is revoked.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Number of revoked ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The secret data to store: ids joined by commas.
    pub fn to_secret_data(&self) -> String {
        self.ids
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl<S: Into<String>> FromIterator<S> for Revocations {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Revocations {
            ids: iter.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_secret_names_match_kuma() {
        assert_eq!(
            KeyOwner::User.signing_key_secret(KeySerial(1)),
            SecretRef::Global {
                name: "user-token-signing-key-1".into()
            }
        );
        assert_eq!(
            KeyOwner::Zone.signing_key_secret(KeySerial(12)),
            SecretRef::Global {
                name: "zone-token-signing-key-12".into()
            }
        );
        assert_eq!(
            KeyOwner::dataplane("default").signing_key_secret(KeySerial(1)),
            SecretRef::Mesh {
                mesh: "default".into(),
                name: "dataplane-token-signing-key-default-1".into()
            }
        );
        assert_eq!(
            KeyOwner::User.signing_key_secret(KeySerial::LEGACY).name(),
            "user-token-signing-key"
        );
    }

    #[test]
    fn revocation_secret_names_match_kuma() {
        assert_eq!(
            KeyOwner::User.revocations_secret(),
            SecretRef::Global {
                name: "user-token-revocations".into()
            }
        );
        assert_eq!(
            KeyOwner::Zone.revocations_secret().name(),
            "zone-token-revocations"
        );
        let dp = KeyOwner::dataplane("demo").revocations_secret();
        assert_eq!(dp.name(), "dataplane-token-revocations-demo");
        assert_eq!(dp.mesh(), Some("demo"));
        assert_eq!(KeyOwner::Zone.revocations_secret().mesh(), None);
    }

    #[test]
    fn serial_is_read_back_from_the_secret_name() {
        let user = KeyOwner::User;
        assert_eq!(
            user.signing_key_serial("user-token-signing-key-1"),
            Some(KeySerial(1))
        );
        assert_eq!(
            user.signing_key_serial("user-token-signing-key-0002"),
            Some(KeySerial(2))
        );
        assert_eq!(
            user.signing_key_serial("user-token-signing-key"),
            Some(KeySerial::LEGACY)
        );
        assert_eq!(user.signing_key_serial("user-token-signing-keyx-1"), None);
        assert_eq!(user.signing_key_serial("user-token-signing-key-x"), None);
        assert_eq!(user.signing_key_serial("user-token-revocations"), None);
        // Mesh "default" must not pick up the keys of mesh "default-1", and back.
        let dp = KeyOwner::dataplane("default");
        assert_eq!(
            dp.signing_key_serial("dataplane-token-signing-key-default-3"),
            Some(KeySerial(3))
        );
        assert_eq!(
            dp.signing_key_serial("dataplane-token-signing-key-default-x-1"),
            None
        );
        for serial in [0, 1, 42] {
            let name = dp.signing_key_secret(KeySerial(serial));
            assert_eq!(dp.signing_key_serial(name.name()), Some(KeySerial(serial)));
        }
    }

    #[test]
    fn revocations_read_kumas_comma_separated_format() {
        let r = Revocations::parse(b"id-1,id-2\n");
        assert!(r.is_revoked("id-1"));
        assert!(r.is_revoked("id-2"));
        assert!(!r.is_revoked("id-3"));
        assert!(!r.is_revoked(""));
        assert_eq!(r.len(), 2);
        assert!(Revocations::parse(b"").is_empty());
        assert!(Revocations::parse(b"\n").is_empty());
        let mut r = Revocations::none();
        r.insert("b");
        r.insert("a");
        assert_eq!(r.to_secret_data(), "a,b");
        assert_eq!(Revocations::parse(r.to_secret_data().as_bytes()), r);
        assert_eq!(["x", "y"].into_iter().collect::<Revocations>().len(), 2);
    }
}
