//! Kuma's tokens: RS256 JWTs for users, dataplanes and zones, signed by rotating
//! RSA keys that live in secrets. Pure: no I/O, no store. Callers read the
//! secrets, build a [`KeySet`] and [`Revocations`], and pass the clock in.
//!
//! ```text
//!  secrets (GlobalSecret / mesh Secret)            token request / presented token
//!  <prefix>-<serial>: PEM RSA PRIVATE KEY                  |
//!        |  KeySet::from_secrets(KeyOwner, ..)             |
//!        v                                                 v
//!  KeySet  --newest private key--> issue_*_token -> Token (header kid = serial)
//!          --key named by kid---> verify_*_token -> Claims<Identity>
//!  <revocations secret> -> Revocations ---------^    (signature, kind, nbf, exp, jti)
//! ```
//!
//! Claim names and secret names follow Kuma exactly, so tokens issued by Kuma (or
//! by `kumactl generate ... --signing-key-path`) verify here and the other way round.

pub mod claims;
pub mod duration;
pub mod error;
pub mod keys;
pub mod secrets;
pub mod token;

pub use claims::{
    ADMIN_USER, AUTHENTICATED_GROUP, Claims, DataplaneIdentity, DataplaneSubject, ProxyType,
    RegisteredClaims, TokenIdentity, TokenKind, UserIdentity, ZoneIdentity,
};
pub use duration::{
    DurationError, ValidForError, format_go_duration, parse_go_duration, parse_valid_for,
};
pub use error::TokenError;
pub use keys::{KeyError, KeySerial, KeySet, PublicKey, SigningKey};
pub use secrets::{ADMIN_USER_TOKEN_SECRET, KeyOwner, Revocations, SecretRef};
pub use token::{
    ADMIN_TOKEN_VALID_FOR, DEFAULT_MACHINE_TOKEN_VALID_FOR, Token, decode_unverified, issue,
    issue_admin_user_token, issue_dataplane_token, issue_user_token, issue_zone_token, verify,
    verify_dataplane_token, verify_user_token, verify_zone_token,
};
