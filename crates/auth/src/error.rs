//! Why a token could not be issued or was refused.

use chrono::{DateTime, Utc};

use crate::claims::TokenKind;

/// Why issuing or verifying a token failed.
///
/// None of these is retryable with the same token: the caller needs a new token
/// (or, for [`TokenError::NoSigningKey`], the control plane needs its signing key
/// first). Each maps to 401 at an API edge, except `NoSigningKey` / `Signing` /
/// `InvalidValidity` at issue time (500 / 500 / 400). Messages name no key
/// material and never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT (wrong number of parts, bad base64 or JSON), or its claims do not
    /// have the shape of the expected token kind, or `exp`/`jti` is missing.
    #[error("could not parse token: {0}")]
    Malformed(String),
    /// The header names an algorithm other than RS256 (for example HS256, which
    /// would let a public key act as an HMAC secret).
    #[error("unsupported token alg {alg}. Allowed algorithm is RS256")]
    UnsupportedAlgorithm {
        /// Algorithm named by the token header.
        alg: String,
    },
    /// The header has no `kid`, so no key can be chosen.
    #[error("JWT token must have kid header")]
    MissingKeyId,
    /// No key with this serial is present: the token was signed by a key that was
    /// rotated out (its secret deleted), by another control plane, or is forged.
    #[error(
        "there is no signing key with KID {kid}. If signing key was rotated, regenerate the token"
    )]
    UnknownKey {
        /// The `kid` from the token header.
        kid: String,
    },
    /// The signature does not verify with the key named by `kid`: the token was
    /// signed by a different key (forged, or from another installation) or altered.
    #[error("token signature is invalid")]
    BadSignature,
    /// The token is valid but of another kind (a user token offered as a dataplane
    /// token, for example).
    #[error("expected a {expected} token, got {}", found.map_or("an unknown kind of", TokenKind::as_str))]
    WrongType {
        /// The kind the caller asked for.
        expected: TokenKind,
        /// The kind the claims look like, if any.
        found: Option<TokenKind>,
    },
    /// `nbf` is in the future (usually clock skew between issuer and verifier).
    #[error(
        "token is not yet valid: 'valid_from' date is in the future. Check clock skew (valid from {not_before})"
    )]
    NotYetValid {
        /// The token's `nbf`.
        not_before: DateTime<Utc>,
    },
    /// `exp` is in the past.
    #[error("token is expired (expired at {expired_at})")]
    Expired {
        /// The token's `exp`.
        expired_at: DateTime<Utc>,
    },
    /// The token id (`jti`) is listed in the revocation secret.
    #[error("token is revoked")]
    Revoked {
        /// The revoked `jti`.
        id: String,
    },
    /// The dataplane token is bound to another mesh than the one it was used in.
    #[error("proxy mesh from requestor: {requested} is different than in token: {token}")]
    MeshMismatch {
        /// Mesh of the dataplane or request.
        requested: String,
        /// Mesh in the token.
        token: String,
    },
    /// The dataplane token is bound to another dataplane name.
    #[error("proxy name from requestor: {requested} is different than in token: {token}")]
    NameMismatch {
        /// Name of the dataplane.
        requested: String,
        /// Name in the token.
        token: String,
    },
    /// The dataplane lacks a tag (label) the token requires.
    #[error("dataplane has no tag {tag:?} required by the token")]
    TagMissing {
        /// The tag required by the token.
        tag: String,
    },
    /// The dataplane's value for a tag is not among the token's allowed values.
    #[error(
        "dataplane contains tag {tag:?} with value {value:?} which is not allowed with this token. Allowed values in token are {allowed:?}"
    )]
    TagValueNotAllowed {
        /// The tag.
        tag: String,
        /// The dataplane's value.
        value: String,
        /// Values the token allows.
        allowed: Vec<String>,
    },
    /// The token is bound to a workload but the dataplane has no `kuma.io/workload` label.
    #[error("dataplane has no workload label required by the token")]
    WorkloadMissing,
    /// The dataplane's workload differs from the token's.
    #[error(
        "dataplane workload {requested:?} is not allowed with this token. Allowed workload in token is {token:?}"
    )]
    WorkloadMismatch {
        /// The dataplane's `kuma.io/workload` label.
        requested: String,
        /// Workload in the token.
        token: String,
    },
    /// The dataplane's identity derives from its workload label, so an unbound
    /// token cannot vouch for it.
    #[error(
        "dataplane with \"kuma.io/workload\" label {workload:?} derives its identity from the workload, so it requires a workload-bound token"
    )]
    WorkloadBindingRequired {
        /// The dataplane's workload.
        workload: String,
    },
    /// The zone token names another zone than the one connecting.
    #[error("zone from requestor: {requested} is different than in token: {token}")]
    ZoneMismatch {
        /// Zone the peer claims to be.
        requested: String,
        /// Zone in the token.
        token: String,
    },
    /// Issuing needs a private key and the key set has none (the control plane has
    /// not created its default signing key yet). Retryable once the key exists.
    #[error("there is no signing key to issue a token")]
    NoSigningKey,
    /// `validFor` is too large to express as an expiry date.
    #[error("validFor is too large")]
    InvalidValidity,
    /// The signer failed (should not happen with a valid RSA key).
    #[error("could not sign a token: {0}")]
    Signing(String),
}
