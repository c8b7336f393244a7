//! Token claims, in Kuma's JSON shape.
//!
//! Kuma's claims are Go structs without JSON tags, so identity fields are
//! capitalised (`Name`, `Groups`, `Mesh`, `Tags`, `Type`, `Workload`, `Zone`,
//! `Scope`) next to the standard `exp`, `nbf`, `iat`, `jti`. Empty strings mean
//! "not bound"; nil slices and maps arrive as `null`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::TokenError;

/// The three kinds of Kuma token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Authenticates a user to the API server.
    User,
    /// Authenticates a data plane proxy to its zone control plane.
    Dataplane,
    /// Authenticates a zone control plane to the global control plane.
    Zone,
}

impl TokenKind {
    /// Lower-case name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::User => "user",
            TokenKind::Dataplane => "dataplane",
            TokenKind::Zone => "zone",
        }
    }

    /// Which kind a claim set looks like. Kuma's claims carry no type field, but
    /// each kind always serialises its own fields: zone tokens `Zone`, dataplane
    /// tokens `Mesh`, user tokens `Name` and `Groups` without either.
    pub fn detect(claims: &serde_json::Map<String, serde_json::Value>) -> Option<TokenKind> {
        if claims.contains_key("Zone") {
            Some(TokenKind::Zone)
        } else if claims.contains_key("Mesh") {
            Some(TokenKind::Dataplane)
        } else if claims.contains_key("Name") || claims.contains_key("Groups") {
            Some(TokenKind::User)
        } else {
            None
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind-specific part of a token's claims.
pub trait TokenIdentity: Serialize + DeserializeOwned {
    /// Which kind of token carries this identity.
    const KIND: TokenKind;
}

/// The standard claims Kuma sets on every token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredClaims {
    /// `exp`: the token is refused after this instant.
    #[serde(rename = "exp", with = "numeric_date")]
    pub expires_at: DateTime<Utc>,
    /// `nbf`: the token is refused before this instant (Kuma backdates it 5 s).
    #[serde(
        rename = "nbf",
        default,
        with = "numeric_date_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_before: Option<DateTime<Utc>>,
    /// `iat`: when it was issued (Kuma backdates it 5 s).
    #[serde(
        rename = "iat",
        default,
        with = "numeric_date_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub issued_at: Option<DateTime<Utc>>,
    /// `jti`: the token id (a UUID) that revocation lists name.
    #[serde(rename = "jti")]
    pub id: String,
}

/// A verified token's claims: its identity plus the standard claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims<T> {
    /// Who the token speaks for.
    #[serde(flatten)]
    pub identity: T,
    /// Expiry, validity start, issue time and id.
    #[serde(flatten)]
    pub registered: RegisteredClaims,
}

/// Group every authenticated user is put in by the API server.
pub const AUTHENTICATED_GROUP: &str = "mesh-system:authenticated";
/// Name and group of the admin user.
pub const ADMIN_USER: &str = "mesh-system:admin";
/// Name of the user of unauthenticated requests.
pub const ANONYMOUS_USER: &str = "mesh-system:anonymous";
/// Group of unauthenticated requests.
pub const UNAUTHENTICATED_GROUP: &str = "mesh-system:unauthenticated";

/// Identity in a user token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIdentity {
    /// User name (`Name`).
    #[serde(rename = "Name")]
    pub name: String,
    /// Groups (`Groups`).
    #[serde(rename = "Groups", default, deserialize_with = "null_as_default")]
    pub groups: Vec<String>,
}

impl UserIdentity {
    /// A user with these groups.
    pub fn new(
        name: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        UserIdentity {
            name: name.into(),
            groups: groups.into_iter().map(Into::into).collect(),
        }
    }

    /// The admin user whose token the control plane bootstraps:
    /// `mesh-system:admin` in group `mesh-system:admin`.
    pub fn admin() -> Self {
        UserIdentity::new(ADMIN_USER, [ADMIN_USER])
    }

    /// The user of requests without credentials.
    pub fn anonymous() -> Self {
        UserIdentity::new(ANONYMOUS_USER, [UNAUTHENTICATED_GROUP])
    }

    /// The same user with [`AUTHENTICATED_GROUP`] added, as the API server records
    /// a user whose token verified.
    #[must_use]
    pub fn authenticated(mut self) -> Self {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.to_owned());
        }
        self
    }
}

impl TokenIdentity for UserIdentity {
    const KIND: TokenKind = TokenKind::User;
}

/// The proxy type a dataplane token may be restricted to (`Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyType {
    /// An ordinary data plane proxy (`dataplane`), the only type Kuma 3 issues.
    Dataplane,
    /// Zone ingress (`ingress`), found in tokens issued by older Kuma.
    Ingress,
    /// Zone egress (`egress`), found in tokens issued by older Kuma.
    Egress,
}

impl ProxyType {
    /// Kuma's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyType::Dataplane => "dataplane",
            ProxyType::Ingress => "ingress",
            ProxyType::Egress => "egress",
        }
    }
}

impl fmt::Display for ProxyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A proxy type Kuma does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a valid proxy type")]
pub struct UnknownProxyType(pub String);

impl FromStr for ProxyType {
    type Err = UnknownProxyType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dataplane" => Ok(ProxyType::Dataplane),
            "ingress" => Ok(ProxyType::Ingress),
            "egress" => Ok(ProxyType::Egress),
            other => Err(UnknownProxyType(other.to_owned())),
        }
    }
}

/// Identity in a dataplane token. Every binding is optional: a token bound only to
/// its mesh admits any dataplane of that mesh; name, tags and workload narrow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneIdentity {
    /// Dataplane name the token is bound to (`Name`, empty = any).
    #[serde(rename = "Name", default, with = "empty_as_none")]
    pub name: Option<String>,
    /// Mesh the token is for (`Mesh`).
    #[serde(rename = "Mesh", default)]
    pub mesh: String,
    /// Tag values the dataplane must carry (`Tags`): each tag must be present with
    /// one of the listed values.
    #[serde(rename = "Tags", default, deserialize_with = "null_as_default")]
    pub tags: BTreeMap<String, Vec<String>>,
    /// Proxy type the token is restricted to (`Type`, empty = any).
    #[serde(rename = "Type", default, with = "empty_as_none")]
    pub proxy_type: Option<ProxyType>,
    /// `kuma.io/workload` label the dataplane must carry (`Workload`, empty = any).
    #[serde(rename = "Workload", default, with = "empty_as_none")]
    pub workload: Option<String>,
}

/// The label that names a dataplane's workload.
pub const WORKLOAD_LABEL: &str = "kuma.io/workload";

/// The dataplane a token is presented for.
#[derive(Debug, Clone, Copy)]
pub struct DataplaneSubject<'a> {
    /// Dataplane name.
    pub name: &'a str,
    /// Dataplane mesh.
    pub mesh: &'a str,
    /// Dataplane labels (tags are matched against them).
    pub labels: &'a BTreeMap<String, String>,
    /// True when a MeshIdentity derives this dataplane's identity from its
    /// `kuma.io/workload` label: then only a workload-bound token will do.
    pub identity_from_workload_label: bool,
}

impl DataplaneIdentity {
    /// A token identity bound only to `mesh`.
    pub fn for_mesh(mesh: impl Into<String>) -> Self {
        DataplaneIdentity {
            name: None,
            mesh: mesh.into(),
            tags: BTreeMap::new(),
            proxy_type: None,
            workload: None,
        }
    }

    /// Checks this (verified) identity against the dataplane presenting it, as
    /// Kuma's universal authenticator does: name and mesh when bound, every tag
    /// present with an allowed value, and the workload binding.
    pub fn authorize(&self, dataplane: &DataplaneSubject<'_>) -> Result<(), TokenError> {
        if let Some(name) = &self.name
            && name != dataplane.name
        {
            return Err(TokenError::NameMismatch {
                requested: dataplane.name.to_owned(),
                token: name.clone(),
            });
        }
        if !self.mesh.is_empty() && self.mesh != dataplane.mesh {
            return Err(TokenError::MeshMismatch {
                requested: dataplane.mesh.to_owned(),
                token: self.mesh.clone(),
            });
        }
        for (tag, allowed) in &self.tags {
            let Some(value) = dataplane.labels.get(tag) else {
                return Err(TokenError::TagMissing { tag: tag.clone() });
            };
            if !allowed.contains(value) {
                return Err(TokenError::TagValueNotAllowed {
                    tag: tag.clone(),
                    value: value.clone(),
                    allowed: allowed.clone(),
                });
            }
        }
        let dp_workload = dataplane.labels.get(WORKLOAD_LABEL);
        match (&self.workload, dp_workload) {
            (None, Some(workload)) if dataplane.identity_from_workload_label => {
                Err(TokenError::WorkloadBindingRequired {
                    workload: workload.clone(),
                })
            }
            (None, _) => Ok(()),
            (Some(_), None) => Err(TokenError::WorkloadMissing),
            (Some(token), Some(dp)) if token != dp => Err(TokenError::WorkloadMismatch {
                requested: dp.clone(),
                token: token.clone(),
            }),
            (Some(_), Some(_)) => Ok(()),
        }
    }
}

impl TokenIdentity for DataplaneIdentity {
    const KIND: TokenKind = TokenKind::Dataplane;
}

/// Identity in a zone token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneIdentity {
    /// The zone (`Zone`).
    #[serde(rename = "Zone")]
    pub zone: String,
    /// What the token may identify (`Scope`), such as `cp`; Kuma 3 issues zone
    /// tokens with no scope by default.
    #[serde(rename = "Scope", default, deserialize_with = "null_as_default")]
    pub scope: Vec<String>,
}

impl ZoneIdentity {
    /// A zone identity with these scopes.
    pub fn new(
        zone: impl Into<String>,
        scope: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        ZoneIdentity {
            zone: zone.into(),
            scope: scope.into_iter().map(Into::into).collect(),
        }
    }

    /// Checks that the zone a peer claims to be is the one its token proves.
    pub fn check_zone(&self, requested: &str) -> Result<(), TokenError> {
        if self.zone == requested {
            Ok(())
        } else {
            Err(TokenError::ZoneMismatch {
                requested: requested.to_owned(),
                token: self.zone.clone(),
            })
        }
    }

    /// True when the token's scope includes `scope`.
    pub fn in_scope(&self, scope: &str) -> bool {
        self.scope.iter().any(|s| s == scope)
    }
}

impl TokenIdentity for ZoneIdentity {
    const KIND: TokenKind = TokenKind::Zone;
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Go writes an unset string field as `""`: map it to `None` and back.
mod empty_as_none {
    use super::*;

    pub fn serialize<S: Serializer, T: fmt::Display>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.collect_str(v),
            None => serializer.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: fmt::Display,
    {
        match Option::<String>::deserialize(deserializer)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// JWT NumericDate: seconds since the epoch, integer or fractional.
mod numeric_date {
    use super::*;

    pub fn serialize<S: Serializer>(
        value: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(value.timestamp())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let number = serde_json::Number::deserialize(deserializer)?;
        from_number(&number).ok_or_else(|| serde::de::Error::custom("invalid NumericDate"))
    }

    pub(super) fn from_number(number: &serde_json::Number) -> Option<DateTime<Utc>> {
        if let Some(secs) = number.as_i64() {
            return DateTime::from_timestamp(secs, 0);
        }
        let value = number.as_f64()?;
        if !value.is_finite() || value.abs() > 1e15 {
            return None;
        }
        let secs = value.floor();
        let nanos = ((value - secs) * 1e9) as u32;
        DateTime::from_timestamp(secs as i64, nanos.min(999_999_999))
    }
}

mod numeric_date_opt {
    use super::*;

    pub fn serialize<S: Serializer>(
        value: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.serialize_i64(v.timestamp()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<serde_json::Number>::deserialize(deserializer)? {
            None => Ok(None),
            Some(n) => numeric_date::from_number(&n)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("invalid NumericDate")),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn subject<'a>(
        name: &'a str,
        mesh: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> DataplaneSubject<'a> {
        DataplaneSubject {
            name,
            mesh,
            labels,
            identity_from_workload_label: false,
        }
    }

    #[test]
    fn user_claims_use_kumas_field_names() {
        let claims = Claims {
            identity: UserIdentity::new("john", ["devs"]),
            registered: RegisteredClaims {
                expires_at: DateTime::from_timestamp(2_000, 0).unwrap(),
                not_before: DateTime::from_timestamp(1_000, 0),
                issued_at: DateTime::from_timestamp(1_000, 0),
                id: "abc".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&claims).unwrap(),
            json!({"Name": "john", "Groups": ["devs"], "exp": 2000, "nbf": 1000, "iat": 1000, "jti": "abc"})
        );
    }

    #[test]
    fn reads_go_nulls_empty_strings_and_fractional_dates() {
        let dp: Claims<DataplaneIdentity> = serde_json::from_value(json!({
            "Name": "", "Mesh": "default", "Tags": null, "Type": "", "Workload": "",
            "exp": 1700000000.5, "nbf": 1699999000, "iat": 1699999000, "jti": "x"
        }))
        .unwrap();
        assert_eq!(dp.identity, DataplaneIdentity::for_mesh("default"));
        assert_eq!(dp.registered.expires_at.timestamp(), 1_700_000_000);
        let user: UserIdentity =
            serde_json::from_value(json!({"Name": "a", "Groups": null})).unwrap();
        assert!(user.groups.is_empty());
        let zone: ZoneIdentity =
            serde_json::from_value(json!({"Zone": "z", "Scope": null})).unwrap();
        assert!(zone.scope.is_empty());
        let bad =
            serde_json::from_value::<DataplaneIdentity>(json!({"Mesh": "m", "Type": "gateway"}));
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("gateway is not a valid proxy type")
        );
    }

    #[test]
    fn dataplane_identity_serializes_unbound_fields_as_go_does() {
        let mut id = DataplaneIdentity::for_mesh("demo");
        id.tags.insert(
            "kuma.io/service".into(),
            vec!["web".into(), "web-api".into()],
        );
        id.proxy_type = Some(ProxyType::Dataplane);
        assert_eq!(
            serde_json::to_value(&id).unwrap(),
            json!({"Name": "", "Mesh": "demo", "Tags": {"kuma.io/service": ["web", "web-api"]}, "Type": "dataplane", "Workload": ""})
        );
    }

    #[test]
    fn detects_kind_from_claim_shape() {
        let kind = |v: serde_json::Value| TokenKind::detect(v.as_object().unwrap());
        assert_eq!(
            kind(json!({"Name": "a", "Groups": []})),
            Some(TokenKind::User)
        );
        assert_eq!(
            kind(json!({"Name": "", "Mesh": "m", "Tags": {}})),
            Some(TokenKind::Dataplane)
        );
        assert_eq!(
            kind(json!({"Zone": "z", "Scope": null})),
            Some(TokenKind::Zone)
        );
        assert_eq!(kind(json!({"sub": "x"})), None);
    }

    #[test]
    fn admin_and_authenticated_users() {
        let admin = UserIdentity::admin();
        assert_eq!(admin.name, "mesh-system:admin");
        assert_eq!(admin.groups, ["mesh-system:admin"]);
        let auth = admin.authenticated().authenticated();
        assert_eq!(
            auth.groups,
            ["mesh-system:admin", "mesh-system:authenticated"]
        );
        assert_eq!(
            UserIdentity::anonymous().groups,
            ["mesh-system:unauthenticated"]
        );
    }

    #[test]
    fn mesh_only_token_admits_any_dataplane_of_the_mesh() {
        let id = DataplaneIdentity::for_mesh("default");
        let l = labels(&[("kuma.io/service", "web")]);
        assert_eq!(id.authorize(&subject("dp-1", "default", &l)), Ok(()));
        assert_eq!(
            id.authorize(&subject("dp-1", "other", &l)),
            Err(TokenError::MeshMismatch {
                requested: "other".into(),
                token: "default".into()
            })
        );
    }

    #[test]
    fn name_and_tag_bindings() {
        let mut id = DataplaneIdentity::for_mesh("default");
        id.name = Some("dp-1".into());
        id.tags
            .insert("kuma.io/service".into(), vec!["web".into(), "api".into()]);
        let web = labels(&[("kuma.io/service", "web")]);
        let db = labels(&[("kuma.io/service", "db")]);
        let none = labels(&[]);
        assert_eq!(id.authorize(&subject("dp-1", "default", &web)), Ok(()));
        assert!(matches!(
            id.authorize(&subject("dp-2", "default", &web)),
            Err(TokenError::NameMismatch { .. })
        ));
        assert_eq!(
            id.authorize(&subject("dp-1", "default", &none)),
            Err(TokenError::TagMissing {
                tag: "kuma.io/service".into()
            })
        );
        let err = id.authorize(&subject("dp-1", "default", &db)).unwrap_err();
        assert!(matches!(err, TokenError::TagValueNotAllowed { ref value, .. } if value == "db"));
        assert!(
            err.to_string()
                .contains(r#"with value "db" which is not allowed"#),
            "{err}"
        );
    }

    #[test]
    fn workload_binding() {
        let mut bound = DataplaneIdentity::for_mesh("default");
        bound.workload = Some("backend".into());
        let backend = labels(&[(WORKLOAD_LABEL, "backend")]);
        let frontend = labels(&[(WORKLOAD_LABEL, "frontend")]);
        let none = labels(&[]);
        assert_eq!(bound.authorize(&subject("a", "default", &backend)), Ok(()));
        assert_eq!(
            bound.authorize(&subject("a", "default", &none)),
            Err(TokenError::WorkloadMissing)
        );
        assert!(matches!(
            bound.authorize(&subject("a", "default", &frontend)),
            Err(TokenError::WorkloadMismatch { .. })
        ));

        let unbound = DataplaneIdentity::for_mesh("default");
        assert_eq!(
            unbound.authorize(&subject("a", "default", &backend)),
            Ok(())
        );
        let mut strict = subject("a", "default", &backend);
        strict.identity_from_workload_label = true;
        assert_eq!(
            unbound.authorize(&strict),
            Err(TokenError::WorkloadBindingRequired {
                workload: "backend".into()
            })
        );
        assert_eq!(bound.authorize(&strict), Ok(()));
    }

    #[test]
    fn zone_identity_checks() {
        let zone = ZoneIdentity::new("zone-1", ["cp"]);
        assert_eq!(zone.check_zone("zone-1"), Ok(()));
        assert_eq!(
            zone.check_zone("zone-2"),
            Err(TokenError::ZoneMismatch {
                requested: "zone-2".into(),
                token: "zone-1".into()
            })
        );
        assert!(zone.in_scope("cp"));
        assert!(!zone.in_scope("ingress"));
    }
}
