//! Tokens backed by the store.
//!
//! ```text
//!  (Global)Secrets  user-token-signing-key-N, zone-token-signing-key-N,
//!                   dataplane-token-signing-key-<mesh>-N, *-revocations
//!        |  list + decode (cached by secret versions)
//!        v
//!  KeySet (kuma-auth)  --issue-->  JWT      --verify-->  typed claims
//! ```
//!
//! The API server issues and verifies user tokens, the dp-server verifies
//! dataplane tokens, the global verifies zone tokens: all through [`TokenService`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use kuma_auth::{
    Claims, DataplaneIdentity, KeyOwner, KeySet, Revocations, SecretRef, SigningKey, Token,
    TokenError, UserIdentity, ZoneIdentity,
};
use kuma_model::{MeshName, Resource, ResourceKey, ResourceKind, ResourceName};
use kuma_store::{ListFilter, ResourceStore, StoreError, Write};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The token itself is bad (forged, expired, revoked, wrong kind...). Not retryable.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No signing key exists for this kind of token (and none may be created here).
    #[error("no signing key found for {0}")]
    NoSigningKey(String),
    /// A signing-key secret name cannot be stored (not a valid resource name).
    #[error("signing key secret {secret} is invalid")]
    InvalidKeySecret { secret: String },
    /// Reading or writing the secrets failed. May succeed on retry.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn owner_label(owner: &KeyOwner) -> String {
    match owner {
        KeyOwner::User => "user tokens".into(),
        KeyOwner::Zone => "zone tokens".into(),
        KeyOwner::Dataplane { mesh } => format!("dataplane tokens of mesh {mesh}"),
    }
}

/// Decodes a Secret's `data` (base64, as Kuma stores it).
pub fn secret_bytes(secret: &Resource) -> Option<Vec<u8>> {
    secret.spec["data"]
        .as_str()
        .and_then(|s| STANDARD.decode(s).ok())
}

/// The spec of a Secret holding `bytes`.
pub fn secret_spec(bytes: &[u8]) -> serde_json::Value {
    json!({ "data": STANDARD.encode(bytes) })
}

fn secret_key(r: &SecretRef) -> Result<ResourceKey, TokensError> {
    let bad = || TokensError::InvalidKeySecret {
        secret: r.name().to_string(),
    };
    let name = ResourceName::new(r.name()).map_err(|_| bad())?;
    match r.mesh() {
        None => ResourceKey::global(ResourceKind::GlobalSecret, name).map_err(|_| bad()),
        Some(m) => ResourceKey::in_mesh(
            ResourceKind::Secret,
            MeshName::new(m).map_err(|_| bad())?,
            name,
        )
        .map_err(|_| bad()),
    }
}

type Fingerprint = Vec<(String, u64)>;
type CachedKeys = (Fingerprint, Arc<KeySet>, Arc<Revocations>);

/// Issues and verifies tokens with keys kept in the store.
pub struct TokenService {
    store: Arc<dyn ResourceStore>,
    cache: Mutex<HashMap<String, CachedKeys>>,
}

impl TokenService {
    pub fn new(store: Arc<dyn ResourceStore>) -> Self {
        TokenService {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn owner_secrets(&self, owner: &KeyOwner) -> Result<Vec<Resource>, TokensError> {
        let filter = match owner {
            KeyOwner::User | KeyOwner::Zone => ListFilter::all(ResourceKind::GlobalSecret),
            KeyOwner::Dataplane { mesh } => {
                let Ok(m) = MeshName::new(mesh.as_str()) else {
                    return Ok(Vec::new());
                };
                ListFilter::in_mesh(ResourceKind::Secret, m)
            }
        };
        let prefix = owner.signing_key_prefix();
        let revocations = owner.revocations_secret();
        let items = self.store.list(&filter).await?.items;
        Ok(items
            .into_iter()
            .filter(|s| {
                s.key.name().as_str().starts_with(&prefix)
                    || s.key.name().as_str() == revocations.name()
            })
            .collect())
    }

    /// The keys and revocations of `owner`, re-read only when the secrets changed.
    pub async fn keys(
        &self,
        owner: &KeyOwner,
    ) -> Result<(Arc<KeySet>, Arc<Revocations>), TokensError> {
        let secrets = self.owner_secrets(owner).await?;
        let fingerprint: Fingerprint = secrets
            .iter()
            .map(|s| (s.key.name().to_string(), s.meta.version))
            .collect();
        let cache_key = format!("{owner:?}");
        if let Some((fp, keys, revs)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cache_key)
            && *fp == fingerprint
        {
            return Ok((keys.clone(), revs.clone()));
        }
        let revocations_name = owner.revocations_secret();
        let mut revocations = Revocations::none();
        let mut keys = KeySet::new();
        for s in &secrets {
            let name = s.key.name().as_str();
            let bytes = secret_bytes(s);
            if name == revocations_name.name() {
                revocations = Revocations::parse(bytes.as_deref().unwrap_or_default());
                continue;
            }
            let Some(serial) = owner.signing_key_serial(name) else {
                continue;
            };
            // A secret named like a key but holding something else must not take
            // every other key down with it: skip it, loudly.
            match bytes.as_deref().map(SigningKey::from_secret_data) {
                Some(Ok(key)) => keys.insert_signing_key(serial, key),
                _ => tracing::warn!(
                    secret = name,
                    owner = %owner_label(owner),
                    "ignoring a signing-key secret that does not hold an RSA private key"
                ),
            }
        }
        let (keys, revocations) = (Arc::new(keys), Arc::new(revocations));
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cache_key, (fingerprint, keys.clone(), revocations.clone()));
        Ok((keys, revocations))
    }

    /// Creates the first signing key of `owner` unless one exists. Safe to race:
    /// the loser of a concurrent create keeps the winner's key.
    pub async fn ensure_signing_key(&self, owner: &KeyOwner) -> Result<(), TokensError> {
        let (keys, _) = self.keys(owner).await?;
        if keys.signing_key().is_some() {
            return Ok(());
        }
        let serial = keys.next_serial();
        let key = tokio::task::spawn_blocking(SigningKey::generate)
            .await
            .map_err(|_| TokensError::NoSigningKey(owner_label(owner)))?
            .map_err(|_| TokensError::NoSigningKey(owner_label(owner)))?;
        let secret = owner.signing_key_secret(serial);
        let key_ref = secret_key(&secret)?;
        let write = Write {
            labels: BTreeMap::new(),
            spec: secret_spec(key.to_pem().as_bytes()),
            status: None,
        };
        match self.store.create(&key_ref, write).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn signing_keys(&self, owner: &KeyOwner) -> Result<Arc<KeySet>, TokensError> {
        let (keys, _) = self.keys(owner).await?;
        if keys.signing_key().is_none() {
            return Err(TokensError::NoSigningKey(owner_label(owner)));
        }
        Ok(keys)
    }

    pub async fn issue_user_token(
        &self,
        user: &UserIdentity,
        valid_for: Duration,
    ) -> Result<Token, TokensError> {
        let keys = self.signing_keys(&KeyOwner::User).await?;
        Ok(kuma_auth::issue_user_token(
            &keys,
            user,
            valid_for,
            Utc::now(),
        )?)
    }

    pub async fn verify_user_token(
        &self,
        token: &str,
    ) -> Result<Claims<UserIdentity>, TokensError> {
        let (keys, revs) = self.keys(&KeyOwner::User).await?;
        Ok(kuma_auth::verify_user_token(
            &keys,
            &revs,
            token,
            Utc::now(),
        )?)
    }

    /// Issues a dataplane token, creating the mesh's signing key on first use.
    pub async fn issue_dataplane_token(
        &self,
        identity: &DataplaneIdentity,
        valid_for: Duration,
    ) -> Result<Token, TokensError> {
        let owner = KeyOwner::dataplane(identity.mesh.clone());
        self.ensure_signing_key(&owner).await?;
        let keys = self.signing_keys(&owner).await?;
        Ok(kuma_auth::issue_dataplane_token(
            &keys,
            identity,
            valid_for,
            Utc::now(),
        )?)
    }

    /// Verifies a dataplane token presented for `mesh`.
    pub async fn verify_dataplane_token(
        &self,
        token: &str,
        mesh: &str,
    ) -> Result<Claims<DataplaneIdentity>, TokensError> {
        let (keys, revs) = self.keys(&KeyOwner::dataplane(mesh)).await?;
        Ok(kuma_auth::verify_dataplane_token(
            &keys,
            &revs,
            token,
            mesh,
            Utc::now(),
        )?)
    }

    pub async fn issue_zone_token(
        &self,
        identity: &ZoneIdentity,
        valid_for: Duration,
    ) -> Result<Token, TokensError> {
        self.ensure_signing_key(&KeyOwner::Zone).await?;
        let keys = self.signing_keys(&KeyOwner::Zone).await?;
        Ok(kuma_auth::issue_zone_token(
            &keys,
            identity,
            valid_for,
            Utc::now(),
        )?)
    }

    pub async fn verify_zone_token(
        &self,
        token: &str,
    ) -> Result<Claims<ZoneIdentity>, TokensError> {
        let (keys, revs) = self.keys(&KeyOwner::Zone).await?;
        Ok(kuma_auth::verify_zone_token(
            &keys,
            &revs,
            token,
            Utc::now(),
        )?)
    }

    /// Kuma's start-up bootstrap: a user-token signing key, and an admin user
    /// token stored as the GlobalSecret `admin-user-token` (kept if present).
    pub async fn bootstrap_admin_token(&self) -> Result<(), TokensError> {
        self.ensure_signing_key(&KeyOwner::User).await?;
        let name = ResourceName::new(kuma_auth::ADMIN_USER_TOKEN_SECRET).map_err(|_| {
            TokensError::InvalidKeySecret {
                secret: kuma_auth::ADMIN_USER_TOKEN_SECRET.into(),
            }
        })?;
        let key = ResourceKey::global(ResourceKind::GlobalSecret, name).map_err(|_| {
            TokensError::InvalidKeySecret {
                secret: kuma_auth::ADMIN_USER_TOKEN_SECRET.into(),
            }
        })?;
        match self.store.get(&key).await {
            Ok(_) => return Ok(()),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let keys = self.signing_keys(&KeyOwner::User).await?;
        let token = kuma_auth::issue_admin_user_token(&keys, Utc::now())?;
        let write = Write {
            labels: BTreeMap::new(),
            spec: secret_spec(token.as_str().as_bytes()),
            status: None,
        };
        match self.store.create(&key, write).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuma_store::MemoryStore;

    async fn service() -> (Arc<dyn ResourceStore>, TokenService) {
        let store: Arc<dyn ResourceStore> = Arc::new(MemoryStore::new());
        let mesh =
            ResourceKey::global(ResourceKind::Mesh, ResourceName::new("default").unwrap()).unwrap();
        store
            .create(
                &mesh,
                Write {
                    labels: BTreeMap::new(),
                    spec: json!({}),
                    status: None,
                },
            )
            .await
            .unwrap();
        (store.clone(), TokenService::new(store))
    }

    #[tokio::test]
    async fn admin_token_bootstrap_is_idempotent_and_verifies() {
        let (store, svc) = service().await;
        svc.bootstrap_admin_token().await.unwrap();
        svc.bootstrap_admin_token().await.unwrap();
        let key = ResourceKey::global(
            ResourceKind::GlobalSecret,
            ResourceName::new("admin-user-token").unwrap(),
        )
        .unwrap();
        let secret = store.get(&key).await.unwrap();
        assert_eq!(secret.meta.version, 1);
        let token = String::from_utf8(secret_bytes(&secret).unwrap()).unwrap();
        let claims = svc.verify_user_token(&token).await.unwrap();
        assert_eq!(claims.identity.name, "mesh-system:admin");
        let keys = store
            .list(&ListFilter::all(ResourceKind::GlobalSecret))
            .await
            .unwrap();
        assert_eq!(keys.total, 2, "one signing key and the admin token");
    }

    #[tokio::test]
    async fn dataplane_tokens_are_bound_to_their_mesh() {
        let (_store, svc) = service().await;
        let id = DataplaneIdentity::for_mesh("default");
        let token = svc
            .issue_dataplane_token(&id, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            svc.verify_dataplane_token(token.as_str(), "default")
                .await
                .is_ok()
        );
        assert!(
            svc.verify_dataplane_token(token.as_str(), "other")
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn forged_token_is_refused() {
        let (_s1, a) = service().await;
        let (_s2, b) = service().await;
        b.ensure_signing_key(&KeyOwner::User).await.unwrap();
        a.ensure_signing_key(&KeyOwner::User).await.unwrap();
        let token = b
            .issue_user_token(&UserIdentity::admin(), Duration::from_secs(60))
            .await
            .unwrap();
        let err = a.verify_user_token(token.as_str()).await.unwrap_err();
        assert!(
            matches!(err, TokensError::Token(TokenError::BadSignature)),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_garbage_key_secret_does_not_break_issuing() {
        let (store, svc) = service().await;
        let key = ResourceKey::global(
            ResourceKind::GlobalSecret,
            ResourceName::new("zone-token-signing-key").unwrap(),
        )
        .unwrap();
        store
            .create(
                &key,
                Write {
                    labels: BTreeMap::new(),
                    spec: secret_spec(b"not a key"),
                    status: None,
                },
            )
            .await
            .unwrap();
        let id = ZoneIdentity::new("zone-1", Vec::<String>::new());
        let t = svc
            .issue_zone_token(&id, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            svc.verify_zone_token(t.as_str())
                .await
                .unwrap()
                .identity
                .zone,
            "zone-1"
        );
    }

    #[tokio::test]
    async fn zone_tokens_round_trip() {
        let (_s, svc) = service().await;
        let id = ZoneIdentity::new("zone-1", vec!["cp".to_string()]);
        let t = svc
            .issue_zone_token(&id, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            svc.verify_zone_token(t.as_str())
                .await
                .unwrap()
                .identity
                .zone,
            "zone-1"
        );
    }
}
