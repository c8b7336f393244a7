//! Issuing and verifying RS256 tokens against a [`KeySet`].
//!
//! Issue: newest private key signs; header `{"alg":"RS256","kid":"<serial>","typ":"JWT"}`;
//! `iat` = `nbf` = now − 5 s, `exp` = now + validFor, `jti` = a fresh UUID — as Kuma does.
//!
//! Verify, in this order (the first failure is reported):
//! shape → algorithm → `kid` → key → signature → token kind → `nbf` → `exp` → revocation
//! → mesh binding (dataplane tokens).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};

use crate::claims::{
    Claims, DataplaneIdentity, RegisteredClaims, TokenIdentity, UserIdentity, ZoneIdentity,
};
use crate::error::TokenError;
use crate::keys::{KeySerial, KeySet};
use crate::secrets::Revocations;

/// Kuma backdates `iat`/`nbf` by this much to absorb clock skew.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5);

/// How long the bootstrapped admin token is valid: 10 years, as Kuma issues it.
pub const ADMIN_TOKEN_VALID_FOR: Duration = Duration::from_secs(24 * 365 * 10 * 3600);

/// `validFor` Kuma applies to dataplane and zone token requests that omit it
/// (10 years, kept for backwards compatibility).
pub const DEFAULT_MACHINE_TOKEN_VALID_FOR: Duration = ADMIN_TOKEN_VALID_FOR;

/// A signed token. `Debug` hides it: a token is a credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token string.
    pub fn new(token: impl Into<String>) -> Self {
        Token(token.into())
    }

    /// The compact JWT.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The compact JWT, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Signs a token for `identity` with the newest private key of `keys`.
pub fn issue<T: TokenIdentity>(
    keys: &KeySet,
    identity: &T,
    valid_for: Duration,
    now: DateTime<Utc>,
) -> Result<Token, TokenError> {
    let (serial, key) = keys.signing_key().ok_or(TokenError::NoSigningKey)?;
    let skew =
        TimeDelta::from_std(CLOCK_SKEW_ALLOWANCE).map_err(|_| TokenError::InvalidValidity)?;
    let valid_for = TimeDelta::from_std(valid_for).map_err(|_| TokenError::InvalidValidity)?;
    let start = now
        .checked_sub_signed(skew)
        .ok_or(TokenError::InvalidValidity)?;
    let expires_at = now
        .checked_add_signed(valid_for)
        .ok_or(TokenError::InvalidValidity)?;
    let claims = Claims {
        identity,
        registered: RegisteredClaims {
            expires_at,
            not_before: Some(start),
            issued_at: Some(start),
            id: uuid::Uuid::new_v4().to_string(),
        },
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(serial.to_string());
    jsonwebtoken::encode(&header, &claims, key.encoding_key())
        .map(Token)
        .map_err(|e| TokenError::Signing(e.to_string()))
}

/// Verifies a token of kind `T`: signature by the key its `kid` names, kind,
/// validity window at `now`, and revocation.
pub fn verify<T: TokenIdentity>(
    keys: &KeySet,
    revocations: &Revocations,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Claims<T>, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| malformed(&e))?;
    if header.alg != Algorithm::RS256 {
        return Err(TokenError::UnsupportedAlgorithm {
            alg: format!("{:?}", header.alg),
        });
    }
    let kid = header.kid.ok_or(TokenError::MissingKeyId)?;
    let key = kid
        .parse::<KeySerial>()
        .ok()
        .and_then(|serial| keys.verifying_key(serial))
        .ok_or_else(|| TokenError::UnknownKey { kid: kid.clone() })?;

    // Time claims are checked below against the caller's clock, not the library's.
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
        token,
        key.decoding_key(),
        &validation,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        _ => malformed(&e),
    })?;

    let found = crate::claims::TokenKind::detect(&data.claims);
    if found != Some(T::KIND) {
        return Err(TokenError::WrongType {
            expected: T::KIND,
            found,
        });
    }
    let claims: Claims<T> = serde_json::from_value(serde_json::Value::Object(data.claims))
        .map_err(|e| TokenError::Malformed(e.to_string()))?;

    let registered = &claims.registered;
    if let Some(not_before) = registered.not_before
        && now < not_before
    {
        return Err(TokenError::NotYetValid { not_before });
    }
    if now > registered.expires_at {
        return Err(TokenError::Expired {
            expired_at: registered.expires_at,
        });
    }
    if revocations.is_revoked(&registered.id) {
        return Err(TokenError::Revoked {
            id: registered.id.clone(),
        });
    }
    Ok(claims)
}

fn malformed(e: &jsonwebtoken::errors::Error) -> TokenError {
    TokenError::Malformed(e.to_string())
}

/// Issues a user token (API server authentication), signed by the newest
/// `user-token-signing-key-<serial>`.
pub fn issue_user_token(
    keys: &KeySet,
    user: &UserIdentity,
    valid_for: Duration,
    now: DateTime<Utc>,
) -> Result<Token, TokenError> {
    issue(keys, user, valid_for, now)
}

/// Verifies a user token against the user-token keys and `user-token-revocations`.
pub fn verify_user_token(
    keys: &KeySet,
    revocations: &Revocations,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Claims<UserIdentity>, TokenError> {
    verify(keys, revocations, token, now)
}

/// Issues the admin token the control plane stores in the `admin-user-token`
/// GlobalSecret at first start: user `mesh-system:admin`, valid for 10 years.
pub fn issue_admin_user_token(keys: &KeySet, now: DateTime<Utc>) -> Result<Token, TokenError> {
    issue_user_token(keys, &UserIdentity::admin(), ADMIN_TOKEN_VALID_FOR, now)
}

/// Issues a dataplane token with the keys of the identity's mesh.
pub fn issue_dataplane_token(
    keys: &KeySet,
    identity: &DataplaneIdentity,
    valid_for: Duration,
    now: DateTime<Utc>,
) -> Result<Token, TokenError> {
    issue(keys, identity, valid_for, now)
}

/// Verifies a dataplane token presented in `mesh`, with that mesh's keys and
/// revocations. A token bound to another mesh is refused with
/// [`TokenError::MeshMismatch`]; name, tag and workload bindings are checked
/// against the dataplane with [`DataplaneIdentity::authorize`].
pub fn verify_dataplane_token(
    keys: &KeySet,
    revocations: &Revocations,
    token: &str,
    mesh: &str,
    now: DateTime<Utc>,
) -> Result<Claims<DataplaneIdentity>, TokenError> {
    let claims: Claims<DataplaneIdentity> = verify(keys, revocations, token, now)?;
    if !claims.identity.mesh.is_empty() && claims.identity.mesh != mesh {
        return Err(TokenError::MeshMismatch {
            requested: mesh.to_owned(),
            token: claims.identity.mesh,
        });
    }
    Ok(claims)
}

/// Issues a zone token, signed by the newest `zone-token-signing-key-<serial>`.
pub fn issue_zone_token(
    keys: &KeySet,
    identity: &ZoneIdentity,
    valid_for: Duration,
    now: DateTime<Utc>,
) -> Result<Token, TokenError> {
    issue(keys, identity, valid_for, now)
}

/// Verifies a zone token against the zone-token keys and `zone-token-revocations`.
/// Check the zone the peer claims with [`ZoneIdentity::check_zone`].
pub fn verify_zone_token(
    keys: &KeySet,
    revocations: &Revocations,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Claims<ZoneIdentity>, TokenError> {
    verify(keys, revocations, token, now)
}

/// Reads a token's claims without verifying anything — for display only
/// (`kumactl` showing what a token says). Never authorise on the result.
pub fn decode_unverified(token: &str) -> Result<serde_json::Value, TokenError> {
    let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token)
        .map_err(|e| malformed(&e))?
        .claims;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    use super::*;
    use crate::claims::{ProxyType, TokenKind};
    use crate::keys::SigningKey;
    use crate::keys::test_keys::key;

    const HOUR: Duration = Duration::from_secs(3600);

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap()
    }

    fn set_with(entries: &[(u64, usize)]) -> KeySet {
        let mut set = KeySet::new();
        for (serial, k) in entries {
            set.insert_signing_key(KeySerial(*serial), key(*k));
        }
        set
    }

    fn parts(token: &Token) -> (serde_json::Value, serde_json::Value) {
        let mut it = token.as_str().split('.');
        let mut next = || -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap()
        };
        (next(), next())
    }

    fn no_revocations() -> Revocations {
        Revocations::none()
    }

    #[test]
    fn user_token_round_trip_in_kumas_shape() {
        let keys = set_with(&[(1, 0)]);
        let user = UserIdentity::new("john.doe@example.com", ["users", "devs"]);
        let token = issue_user_token(&keys, &user, 24 * HOUR, now()).unwrap();

        let (header, payload) = parts(&token);
        assert_eq!(header, json!({"alg": "RS256", "kid": "1", "typ": "JWT"}));
        let start = now().timestamp() - 5;
        assert_eq!(payload["Name"], "john.doe@example.com");
        assert_eq!(payload["Groups"], json!(["users", "devs"]));
        assert_eq!(payload["iat"], start);
        assert_eq!(payload["nbf"], start);
        assert_eq!(payload["exp"], now().timestamp() + 24 * 3600);
        assert!(uuid::Uuid::parse_str(payload["jti"].as_str().unwrap()).is_ok());

        let claims = verify_user_token(&keys, &no_revocations(), token.as_str(), now()).unwrap();
        assert_eq!(claims.identity, user);
        assert_eq!(claims.registered.id, payload["jti"]);
    }

    #[test]
    fn every_token_gets_a_fresh_id() {
        let keys = set_with(&[(1, 0)]);
        let user = UserIdentity::new("a", ["g"]);
        let a = issue_user_token(&keys, &user, HOUR, now()).unwrap();
        let b = issue_user_token(&keys, &user, HOUR, now()).unwrap();
        assert_ne!(parts(&a).1["jti"], parts(&b).1["jti"]);
    }

    #[test]
    fn dataplane_token_round_trip_and_mesh_binding() {
        let keys = set_with(&[(1, 0)]);
        let mut id = DataplaneIdentity::for_mesh("demo");
        id.name = Some("demo-01".into());
        id.tags.insert(
            "kuma.io/service".into(),
            vec!["web".into(), "web-api".into()],
        );
        id.proxy_type = Some(ProxyType::Dataplane);
        id.workload = Some("backend".into());
        let token = issue_dataplane_token(&keys, &id, HOUR, now()).unwrap();
        let (_, payload) = parts(&token);
        assert_eq!(payload["Mesh"], "demo");
        assert_eq!(payload["Type"], "dataplane");
        assert_eq!(
            payload["Tags"],
            json!({"kuma.io/service": ["web", "web-api"]})
        );

        let claims =
            verify_dataplane_token(&keys, &no_revocations(), token.as_str(), "demo", now())
                .unwrap();
        assert_eq!(claims.identity, id);
        assert_eq!(
            verify_dataplane_token(&keys, &no_revocations(), token.as_str(), "other", now()),
            Err(TokenError::MeshMismatch {
                requested: "other".into(),
                token: "demo".into()
            })
        );
    }

    #[test]
    fn zone_token_round_trip() {
        let keys = set_with(&[(1, 0)]);
        let id = ZoneIdentity::new("zone-1", ["cp"]);
        let token = issue_zone_token(&keys, &id, HOUR, now()).unwrap();
        assert_eq!(parts(&token).1["Zone"], "zone-1");
        assert_eq!(parts(&token).1["Scope"], json!(["cp"]));
        let claims = verify_zone_token(&keys, &no_revocations(), token.as_str(), now()).unwrap();
        assert_eq!(claims.identity, id);
        assert!(claims.identity.check_zone("zone-2").is_err());
    }

    #[test]
    fn admin_token_is_for_mesh_system_admin_for_ten_years() {
        let keys = set_with(&[(1, 0)]);
        let token = issue_admin_user_token(&keys, now()).unwrap();
        let claims = verify_user_token(&keys, &no_revocations(), token.as_str(), now()).unwrap();
        assert_eq!(claims.identity, UserIdentity::admin());
        assert_eq!(
            (claims.registered.expires_at - now()).num_hours(),
            24 * 365 * 10
        );
    }

    #[test]
    fn expired_token_is_refused_at_the_second_after_exp() {
        let keys = set_with(&[(1, 0)]);
        let token = issue_user_token(&keys, &UserIdentity::admin(), HOUR, now()).unwrap();
        let exp = now() + TimeDelta::hours(1);
        assert!(verify_user_token(&keys, &no_revocations(), token.as_str(), exp).is_ok());
        let later = exp + TimeDelta::seconds(1);
        assert_eq!(
            verify_user_token(&keys, &no_revocations(), token.as_str(), later),
            Err(TokenError::Expired { expired_at: exp })
        );
    }

    #[test]
    fn token_from_the_future_is_not_yet_valid() {
        let keys = set_with(&[(1, 0)]);
        let token = issue_user_token(&keys, &UserIdentity::admin(), HOUR, now()).unwrap();
        // 5 s of backdating absorb small skew...
        let slightly_behind = now() - TimeDelta::seconds(5);
        assert!(
            verify_user_token(&keys, &no_revocations(), token.as_str(), slightly_behind).is_ok()
        );
        // ...but not more.
        let behind = now() - TimeDelta::seconds(6);
        assert_eq!(
            verify_user_token(&keys, &no_revocations(), token.as_str(), behind),
            Err(TokenError::NotYetValid {
                not_before: now() - TimeDelta::seconds(5)
            })
        );
    }

    #[test]
    fn token_signed_by_another_installations_key_is_forged() {
        let ours = set_with(&[(1, 0)]);
        let theirs = set_with(&[(1, 1)]);
        let token = issue_user_token(&theirs, &UserIdentity::admin(), HOUR, now()).unwrap();
        assert_eq!(
            verify_user_token(&ours, &no_revocations(), token.as_str(), now()),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_claims_break_the_signature() {
        let keys = set_with(&[(1, 0)]);
        let token =
            issue_user_token(&keys, &UserIdentity::new("bob", ["users"]), HOUR, now()).unwrap();
        let mut pieces: Vec<String> = token.as_str().split('.').map(str::to_owned).collect();
        let mut payload = parts(&token).1;
        payload["Groups"] = json!(["mesh-system:admin"]);
        pieces[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
        assert_eq!(
            verify_user_token(&keys, &no_revocations(), &pieces.join("."), now()),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn unknown_or_missing_kid_is_refused() {
        let old = set_with(&[(7, 0)]);
        let current = set_with(&[(1, 0)]);
        let token = issue_user_token(&old, &UserIdentity::admin(), HOUR, now()).unwrap();
        let err =
            verify_user_token(&current, &no_revocations(), token.as_str(), now()).unwrap_err();
        assert_eq!(err, TokenError::UnknownKey { kid: "7".into() });
        assert!(err.to_string().contains("regenerate the token"));

        let key = key(0);
        let claims = json!({"Name": "a", "Groups": [], "exp": now().timestamp() + 60, "jti": "x"});
        let no_kid =
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key.encoding_key())
                .unwrap();
        assert_eq!(
            verify_user_token(&current, &no_revocations(), &no_kid, now()),
            Err(TokenError::MissingKeyId)
        );
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("latest".into());
        let word_kid = jsonwebtoken::encode(&header, &claims, key.encoding_key()).unwrap();
        assert_eq!(
            verify_user_token(&current, &no_revocations(), &word_kid, now()),
            Err(TokenError::UnknownKey {
                kid: "latest".into()
            })
        );
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_while_their_key_exists() {
        let mut keys = set_with(&[(1, 0)]);
        let old_token = issue_user_token(&keys, &UserIdentity::admin(), HOUR, now()).unwrap();
        keys.insert_signing_key(keys.next_serial(), key(1));
        let new_token = issue_user_token(&keys, &UserIdentity::admin(), HOUR, now()).unwrap();
        assert_eq!(parts(&new_token).0["kid"], "2", "the newest key signs");
        assert!(verify_user_token(&keys, &no_revocations(), old_token.as_str(), now()).is_ok());
        assert!(verify_user_token(&keys, &no_revocations(), new_token.as_str(), now()).is_ok());

        keys.remove(KeySerial(1));
        assert_eq!(
            verify_user_token(&keys, &no_revocations(), old_token.as_str(), now()),
            Err(TokenError::UnknownKey { kid: "1".into() })
        );
        assert!(verify_user_token(&keys, &no_revocations(), new_token.as_str(), now()).is_ok());
    }

    #[test]
    fn verify_only_public_key_verifies_but_never_signs() {
        let signer = set_with(&[(3, 2)]);
        let token =
            issue_zone_token(&signer, &ZoneIdentity::new("z", ["cp"]), HOUR, now()).unwrap();
        let mut verifier = KeySet::new();
        verifier.insert_public_key(KeySerial(3), key(2).public_key().clone());
        assert!(verify_zone_token(&verifier, &no_revocations(), token.as_str(), now()).is_ok());
        assert_eq!(
            issue_zone_token(&verifier, &ZoneIdentity::new("z", ["cp"]), HOUR, now()),
            Err(TokenError::NoSigningKey)
        );
    }

    #[test]
    fn revoked_token_is_refused_others_are_not() {
        let keys = set_with(&[(1, 0)]);
        let a = issue_user_token(&keys, &UserIdentity::admin(), HOUR, now()).unwrap();
        let b = issue_user_token(&keys, &UserIdentity::admin(), HOUR, now()).unwrap();
        let a_id = parts(&a).1["jti"].as_str().unwrap().to_owned();
        let revocations = Revocations::parse(format!("unrelated,{a_id}\n").as_bytes());
        assert_eq!(
            verify_user_token(&keys, &revocations, a.as_str(), now()),
            Err(TokenError::Revoked { id: a_id })
        );
        assert!(verify_user_token(&keys, &revocations, b.as_str(), now()).is_ok());
    }

    #[test]
    fn a_token_of_another_kind_is_the_wrong_type() {
        // Same key for both kinds, so only the claim shape tells them apart.
        let keys = set_with(&[(1, 0)]);
        let user = issue_user_token(&keys, &UserIdentity::admin(), HOUR, now()).unwrap();
        assert_eq!(
            verify_dataplane_token(&keys, &no_revocations(), user.as_str(), "default", now()),
            Err(TokenError::WrongType {
                expected: TokenKind::Dataplane,
                found: Some(TokenKind::User)
            })
        );
        let zone = issue_zone_token(
            &keys,
            &ZoneIdentity::new("z", Vec::<String>::new()),
            HOUR,
            now(),
        )
        .unwrap();
        let err = verify_user_token(&keys, &no_revocations(), zone.as_str(), now()).unwrap_err();
        assert_eq!(err.to_string(), "expected a user token, got zone");
        let dp =
            issue_dataplane_token(&keys, &DataplaneIdentity::for_mesh("m"), HOUR, now()).unwrap();
        assert!(matches!(
            verify_zone_token(&keys, &no_revocations(), dp.as_str(), now()),
            Err(TokenError::WrongType {
                found: Some(TokenKind::Dataplane),
                ..
            })
        ));
    }

    #[test]
    fn garbage_and_other_algorithms_are_refused() {
        let keys = set_with(&[(1, 0)]);
        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c",
            "....",
            "eyJhbGciOiJSUzI1NiJ9.e30",
        ] {
            assert!(
                matches!(
                    verify_user_token(&keys, &no_revocations(), bad, now()),
                    Err(TokenError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        // HS256 with the public key as the secret: the classic algorithm confusion.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("1".into());
        let claims = json!({"Name": "a", "Groups": [], "exp": now().timestamp() + 60, "jti": "x"});
        let secret =
            jsonwebtoken::EncodingKey::from_secret(key(0).public_key().to_pem().as_bytes());
        let hs = jsonwebtoken::encode(&header, &claims, &secret).unwrap();
        assert_eq!(
            verify_user_token(&keys, &no_revocations(), &hs, now()),
            Err(TokenError::UnsupportedAlgorithm {
                alg: "HS256".into()
            })
        );
        // alg "none" is not even a JWS algorithm to the parser.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"1"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert!(matches!(
            verify_user_token(&keys, &no_revocations(), &none, now()),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn token_without_exp_or_jti_is_malformed() {
        let keys = set_with(&[(1, 0)]);
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("1".into());
        for claims in [
            json!({"Name": "a", "Groups": [], "jti": "x"}),
            json!({"Name": "a", "Groups": [], "exp": now().timestamp() + 60}),
        ] {
            let token = jsonwebtoken::encode(&header, &claims, key(0).encoding_key()).unwrap();
            assert!(matches!(
                verify_user_token(&keys, &no_revocations(), &token, now()),
                Err(TokenError::Malformed(_))
            ));
        }
    }

    #[test]
    fn issuing_needs_a_key_and_a_representable_expiry() {
        assert_eq!(
            issue_user_token(&KeySet::new(), &UserIdentity::admin(), HOUR, now()),
            Err(TokenError::NoSigningKey)
        );
        let keys = set_with(&[(1, 0)]);
        assert_eq!(
            issue_user_token(&keys, &UserIdentity::admin(), Duration::MAX, now()),
            Err(TokenError::InvalidValidity)
        );
    }

    #[test]
    fn token_pem_round_trip_through_secret_data_still_verifies() {
        // A key written to a secret and read back by another control plane instance.
        let keys = set_with(&[(1, 0)]);
        let token = issue_user_token(&keys, &UserIdentity::admin(), HOUR, now()).unwrap();
        let mut reloaded = KeySet::new();
        reloaded.insert_signing_key(
            KeySerial(1),
            SigningKey::from_pem(&key(0).to_pem()).unwrap(),
        );
        assert!(verify_user_token(&reloaded, &no_revocations(), token.as_str(), now()).is_ok());
    }

    #[test]
    fn unverified_decode_shows_claims_and_debug_hides_the_token() {
        let keys = set_with(&[(1, 0)]);
        let token = issue_user_token(&keys, &UserIdentity::admin(), HOUR, now()).unwrap();
        assert_eq!(
            decode_unverified(token.as_str()).unwrap()["Name"],
            "mesh-system:admin"
        );
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }
}
