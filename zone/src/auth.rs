//! Dataplane authentication: the token a proxy presents at bootstrap and on
//! every ADS stream must verify (signature, expiry, revocation, mesh) and be
//! bound to this proxy (name, tags).

use crate::bootstrap::parse_node_id;
use crate::config::DpAuth;
use envoy_types::pb::envoy::config::core::v3::Node;
use kuma_auth::DataplaneSubject;
use kuma_tokens::{TokenService, TokensError};
use kuma_xds::StreamAuth;
use kuma_xds::input::DataplaneSpec;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// Why a proxy was refused; the message goes back to the proxy.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("dataplane token is required")]
    Missing,
    #[error("invalid dataplane token: {0}")]
    Invalid(String),
    #[error("could not verify the dataplane token right now")]
    Unavailable,
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        match e {
            AuthError::Unavailable => Status::unavailable(e.to_string()),
            _ => Status::unauthenticated(e.to_string()),
        }
    }
}

#[derive(Clone)]
pub struct DpAuthenticator {
    mode: DpAuth,
    tokens: Arc<TokenService>,
}

/// The tags and labels a token's bindings are checked against.
fn subject_labels(
    labels: &BTreeMap<String, String>,
    spec: Option<&DataplaneSpec>,
) -> BTreeMap<String, String> {
    let mut out = labels.clone();
    for inbound in spec
        .map(|s| s.networking.inbound.as_slice())
        .unwrap_or_default()
    {
        for (k, v) in &inbound.tags {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    out
}

impl DpAuthenticator {
    pub fn new(mode: DpAuth, tokens: Arc<TokenService>) -> Self {
        DpAuthenticator { mode, tokens }
    }

    /// Verifies `token` for the dataplane `mesh`/`name` described by `spec`.
    pub async fn verify(
        &self,
        token: &str,
        mesh: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        spec: Option<&DataplaneSpec>,
    ) -> Result<(), AuthError> {
        if self.mode == DpAuth::None {
            return Ok(());
        }
        let token = token.trim();
        let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let claims = match self.tokens.verify_dataplane_token(token, mesh).await {
            Ok(c) => c,
            Err(TokensError::Token(e)) => return Err(AuthError::Invalid(e.to_string())),
            Err(e @ (TokensError::NoSigningKey(_) | TokensError::InvalidKeySecret { .. })) => {
                return Err(AuthError::Invalid(e.to_string()));
            }
            Err(_) => return Err(AuthError::Unavailable),
        };
        let labels = subject_labels(labels, spec);
        let subject = DataplaneSubject {
            name,
            mesh,
            labels: &labels,
            identity_from_workload_label: false,
        };
        claims
            .identity
            .authorize(&subject)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }
}

/// ADS side: the token travels in the `authorization` metadata of the stream.
pub struct AdsAuth {
    pub auth: DpAuthenticator,
    pub store: Arc<dyn kuma_store::ResourceStore>,
}

#[tonic::async_trait]
impl StreamAuth for AdsAuth {
    async fn authenticate(&self, node: &Node, metadata: &MetadataMap) -> Result<(), Status> {
        if self.auth.mode == DpAuth::None {
            return Ok(());
        }
        let (mesh, name) = parse_node_id(&node.id)
            .ok_or_else(|| Status::invalid_argument("node id must be <mesh>.<name>"))?;
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // Bindings are checked against the Dataplane the proxy sends, else the stored one.
        let (labels, spec) = match crate::lifecycle::dataplane_from_node(node) {
            Some(Ok(dp)) => (dp.labels, Some(dp.spec)),
            Some(Err(reason)) => return Err(Status::invalid_argument(reason)),
            None => match crate::lifecycle::stored_dataplane(self.store.as_ref(), mesh, name).await
            {
                Some(dp) => (dp.labels, Some(dp.spec)),
                None => (BTreeMap::new(), None),
            },
        };
        self.auth
            .verify(token, mesh, name, &labels, spec.as_ref())
            .await
            .map_err(Status::from)
    }
}
