//! Who is calling: localhost-is-admin (strictly), Bearer user tokens, or anonymous.
//!
//! Localhost is admin only when every one of these holds: the TCP peer is a
//! loopback address, the `Host` header names a loopback host, and the request
//! carries no `Forwarded`, `X-Forwarded-For`, `X-Real-IP`, non-loopback
//! `Origin` or cross-site `Sec-Fetch-Site` header. A proxy on the same host, or
//! a browser page on another site, therefore never inherits admin rights.

use crate::SharedState;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kuma_tokens::TokensError;
use std::net::{IpAddr, SocketAddr};

pub const ADMIN_USER: &str = "mesh-system:admin";
pub const ADMIN_GROUP: &str = "mesh-system:admin";
pub const ANONYMOUS_USER: &str = "mesh-system:anonymous";
pub const UNAUTHENTICATED_GROUP: &str = "mesh-system:unauthenticated";
pub const AUTHENTICATED_GROUP: &str = "mesh-system:authenticated";

/// Authentication settings (`KUMA_API_SERVER_AUTHN_*`, `KUMA_ACCESS_STATIC_*`).
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub localhost_is_admin: bool,
    pub admin_users: Vec<String>,
    pub admin_groups: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            localhost_is_admin: true,
            admin_users: vec![ADMIN_USER.into()],
            admin_groups: vec![ADMIN_GROUP.into()],
        }
    }
}

/// The caller, attached to every request as an extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub groups: Vec<String>,
    admin: bool,
}

impl Identity {
    pub fn anonymous() -> Self {
        Identity {
            name: ANONYMOUS_USER.into(),
            groups: vec![UNAUTHENTICATED_GROUP.into()],
            admin: false,
        }
    }

    pub fn localhost_admin() -> Self {
        Identity {
            name: ADMIN_USER.into(),
            groups: vec![ADMIN_GROUP.into(), AUTHENTICATED_GROUP.into()],
            admin: true,
        }
    }

    pub fn user(name: String, mut groups: Vec<String>, config: &AuthConfig) -> Self {
        groups.push(AUTHENTICATED_GROUP.into());
        let admin = config.admin_users.contains(&name)
            || groups.iter().any(|g| config.admin_groups.contains(g));
        Identity {
            name,
            groups,
            admin,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.admin
    }

    pub fn is_authenticated(&self) -> bool {
        self.name != ANONYMOUS_USER
    }
}

/// Verifies credentials against the signing keys in the store.
pub struct Authenticator {
    pub config: AuthConfig,
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Self {
        Authenticator { config }
    }

    /// Verifies a user token against the user-token signing keys in the store.
    pub async fn verify_user_token(
        &self,
        state: &SharedState,
        token: &str,
    ) -> Result<Identity, ApiError> {
        match state.tokens.verify_user_token(token).await {
            Ok(claims) => Ok(Identity::user(
                claims.identity.name,
                claims.identity.groups,
                &self.config,
            )),
            Err(TokensError::Store(e)) => Err(ApiError::from_store("Could not authenticate", e)),
            Err(error) => {
                tracing::debug!(%error, "user token rejected");
                Err(ApiError::unauthenticated(format!(
                    "invalid user token: {error}"
                )))
            }
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':')
            .map(|(h, p)| {
                if p.chars().all(|c| c.is_ascii_digit()) {
                    h
                } else {
                    host
                }
            })
            .unwrap_or(host)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The strict localhost rule described in the module docs.
pub fn is_trusted_localhost(peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
    let Some(peer) = peer else { return false };
    if !peer.ip().is_loopback() {
        return false;
    }
    let host_ok = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(is_loopback_host);
    if !host_ok {
        return false;
    }
    for forwarded in [
        "forwarded",
        "x-forwarded-for",
        "x-real-ip",
        "x-forwarded-host",
    ] {
        if headers.contains_key(forwarded) {
            return false;
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let o = origin.to_str().unwrap_or("");
        let host = o.split_once("://").map(|(_, rest)| rest).unwrap_or(o);
        if !is_loopback_host(host) {
            return false;
        }
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str().unwrap_or(""), "same-origin" | "none")
    {
        return false;
    }
    true
}

/// Attaches an [`Identity`] to the request, or answers 401 for a bad token.
pub async fn authenticate(
    State(state): State<SharedState>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let headers = req.headers();
    let identity = if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let Some(token) = auth
            .to_str()
            .ok()
            .and_then(|s| s.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return ApiError::unauthenticated(
                "the Authorization header must be 'Bearer <user token>'",
            )
            .into_response();
        };
        match state.auth.verify_user_token(&state, token).await {
            Ok(id) => id,
            Err(e) => return e.into_response(),
        }
    } else if state.auth.config.localhost_is_admin && is_trusted_localhost(peer, headers) {
        Identity::localhost_admin()
    } else {
        Identity::anonymous()
    };
    // Anonymous callers may read; everything else needs a credential.
    if !identity.is_authenticated()
        && req.method() != axum::http::Method::GET
        && req.method() != axum::http::Method::HEAD
    {
        return ApiError::unauthenticated(
            "authentication required: present a user token as 'Authorization: Bearer <token>'",
        )
        .into_response();
    }
    req.extensions_mut().insert(identity);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn localhost_rule() {
        let lo: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let lo6: SocketAddr = "[::1]:5555".parse().unwrap();
        let remote: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        assert!(is_trusted_localhost(
            Some(lo),
            &headers(&[("host", "localhost:5681")])
        ));
        assert!(is_trusted_localhost(
            Some(lo6),
            &headers(&[("host", "[::1]:5681")])
        ));
        assert!(is_trusted_localhost(
            Some(lo),
            &headers(&[("host", "127.0.0.1")])
        ));
        assert!(!is_trusted_localhost(
            Some(remote),
            &headers(&[("host", "localhost")])
        ));
        assert!(!is_trusted_localhost(
            None,
            &headers(&[("host", "localhost")])
        ));
        assert!(!is_trusted_localhost(
            Some(lo),
            &headers(&[("host", "kuma.example.com")])
        ));
        assert!(!is_trusted_localhost(Some(lo), &headers(&[])));
        assert!(!is_trusted_localhost(
            Some(lo),
            &headers(&[("host", "localhost"), ("x-forwarded-for", "1.2.3.4")])
        ));
        assert!(!is_trusted_localhost(
            Some(lo),
            &headers(&[("host", "localhost"), ("forwarded", "for=1.2.3.4")])
        ));
        assert!(!is_trusted_localhost(
            Some(lo),
            &headers(&[("host", "localhost"), ("x-real-ip", "1.2.3.4")])
        ));
        assert!(!is_trusted_localhost(
            Some(lo),
            &headers(&[("host", "localhost"), ("origin", "https://evil.example")])
        ));
        assert!(is_trusted_localhost(
            Some(lo),
            &headers(&[("host", "localhost"), ("origin", "http://localhost:5681")])
        ));
        assert!(!is_trusted_localhost(
            Some(lo),
            &headers(&[("host", "localhost"), ("sec-fetch-site", "cross-site")])
        ));
        assert!(is_trusted_localhost(
            Some(lo),
            &headers(&[("host", "localhost"), ("sec-fetch-site", "same-origin")])
        ));
    }
}
