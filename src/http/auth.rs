//! Bearer-token authentication and role checks for the client API.
//!
//! Why roles by endpoint class and not per route: an operator reasons in three
//! kinds of power (see the log, add to it, change the cluster), and a new route
//! falls into one of them by its method and path, so it cannot ship unprotected.
//!
//! Invariants:
//! - `/health` and `/ready` are always open (probes), and so are GETs of the web
//!   console's static files (`/ui`, `/ui/*`); `/metrics` is open only with
//!   `[auth] public_metrics`; everything else needs a token when tokens are set.
//! - Roles are ordered: `admin` can do what `write` can, `write` what `read` can.
//! - Missing or unknown token: 401 with `WWW-Authenticate`; known token without the
//!   role: 403. The check runs before the request body is read.
//! - Secrets are compared in constant time (SHA-256 of both, then `subtle`), and
//!   every token is compared, so timing says nothing about which one matched.
//!   Secrets are never logged or shown in errors; only the token's name is.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Map;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

use super::error::error_response;

/// Shortest secret accepted in a tokens file.
pub const MIN_SECRET_LEN: usize = 16;

/// What a token may do. Ordered: each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
    Admin,
}

/// The tokens of a tokens file, with their secrets hashed.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<Token>,
    public_metrics: bool,
}

#[derive(Clone)]
struct Token {
    name: String,
    role: Role,
    digest: [u8; 32],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    secret: String,
}

impl Tokens {
    /// Reads a tokens file. The error names the file and the entry (never a secret).
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the TOML text of a tokens file.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| {
            // toml's message quotes the offending line, which may hold a secret.
            let line = e.span().map(|s| text[..s.start].lines().count().max(1));
            format!("not a valid tokens file (line {line:?}): {}", e.message())
        })?;
        let mut entries: Vec<Token> = Vec::new();
        for t in file.tokens {
            if t.secret.len() < MIN_SECRET_LEN {
                return Err(format!(
                    "token {:?}: secret shorter than {MIN_SECRET_LEN} characters",
                    t.name
                ));
            }
            let digest = sha256(t.secret.as_bytes());
            if entries
                .iter()
                .any(|e| e.name == t.name || e.digest == digest)
            {
                return Err(format!("token {:?}: name or secret used twice", t.name));
            }
            entries.push(Token {
                name: t.name,
                role: t.role,
                digest,
            });
        }
        if entries.is_empty() {
            return Err("no [[tokens]] entries".into());
        }
        Ok(Tokens {
            entries,
            public_metrics: false,
        })
    }

    /// Lets `/metrics` through without a token.
    pub fn with_public_metrics(mut self, public: bool) -> Self {
        self.public_metrics = public;
        self
    }

    /// The token whose secret is `secret`, comparing against every token.
    fn find(&self, secret: &[u8]) -> Option<&Token> {
        let digest = sha256(secret);
        let mut found = None;
        for t in &self.entries {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found
    }
}

/// Names and roles only: a digest of a secret is not for logs either.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|t| (&t.name, t.role)))
            .finish()
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The role a request needs, or `None` for open endpoints.
pub fn required_role(method: &Method, path: &str, public_metrics: bool) -> Option<Role> {
    match path {
        "/health" | "/ready" => None,
        // The console's static files; its API calls are checked like any other.
        p if (p == "/ui" || p.starts_with("/ui/"))
            && (method == Method::GET || method == Method::HEAD) =>
        {
            None
        }
        "/metrics" if public_metrics => None,
        "/v1/cluster/transfer-leadership" | "/v1/log/trim" => Some(Role::Admin),
        p if p.starts_with("/v1/debug/") => Some(Role::Admin),
        p if p.starts_with("/v1/cluster/") && method != Method::GET && method != Method::HEAD => {
            Some(Role::Admin)
        }
        "/v1/messages" | "/v1/messages/batch" | "/api/v1/append" if method == Method::POST => {
            Some(Role::Write)
        }
        p if p.starts_with("/v1/cursors/") && method != Method::GET && method != Method::HEAD => {
            Some(Role::Write)
        }
        _ => Some(Role::Read),
    }
}

/// Middleware: lets a request through when its token has the role its endpoint needs.
pub async fn check(State(tokens): State<Arc<Tokens>>, req: Request, next: Next) -> Response {
    let Some(need) = required_role(req.method(), req.uri().path(), tokens.public_metrics) else {
        return next.run(req).await;
    };
    let Some(secret) = bearer(&req) else {
        return unauthorized("missing bearer token (Authorization: Bearer <token>)");
    };
    let Some(token) = tokens.find(secret) else {
        return unauthorized("unknown token");
    };
    if token.role < need {
        let msg = format!(
            "token {:?} has role {:?}; this endpoint needs {:?}",
            token.name, token.role, need
        )
        .to_lowercase();
        return error_response(StatusCode::FORBIDDEN, "forbidden", &msg, Map::new());
    }
    next.run(req).await
}

/// The secret of an `Authorization: Bearer <secret>` header.
fn bearer(req: &Request) -> Option<&[u8]> {
    let value = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let secret = value[7..].trim_ascii();
    (!secret.is_empty()).then_some(secret)
}

fn unauthorized(message: &str) -> Response {
    let mut resp = error_response(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        message,
        Map::new(),
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"raftlog\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[tokens]]
name = "reader"
role = "read"
secret = "reader-secret-0123456789"

[[tokens]]
name = "ops"
role = "admin"
secret = "admin-secret-0123456789"
"#;

    #[test]
    fn parses_and_finds_tokens_by_secret() {
        let t = Tokens::parse(FILE).unwrap();
        assert_eq!(
            t.find(b"reader-secret-0123456789").unwrap().role,
            Role::Read
        );
        assert_eq!(t.find(b"admin-secret-0123456789").unwrap().name, "ops");
        assert!(t.find(b"admin-secret-012345678").is_none());
        assert!(t.find(b"").is_none());
    }

    #[test]
    fn rejects_short_duplicate_and_unknown_roles_without_echoing_secrets() {
        let short = "[[tokens]]\nname='a'\nrole='read'\nsecret='short'\n";
        assert!(Tokens::parse(short).unwrap_err().contains("shorter"));
        let dup = format!(
            "{FILE}\n[[tokens]]\nname='x'\nrole='write'\nsecret='reader-secret-0123456789'\n"
        );
        assert!(Tokens::parse(&dup).unwrap_err().contains("twice"));
        let bad = "[[tokens]]\nname='a'\nrole='root'\nsecret='sssssssssssssssssssssss'\n";
        let err = Tokens::parse(bad).unwrap_err();
        assert!(!err.contains("sssssssss"), "{err}");
        assert!(Tokens::parse("").is_err());
    }

    #[test]
    fn endpoint_classes() {
        use Role::*;
        let r = |m: Method, p: &str| required_role(&m, p, false);
        assert_eq!(r(Method::GET, "/health"), None);
        assert_eq!(r(Method::GET, "/ready"), None);
        assert_eq!(r(Method::GET, "/metrics"), Some(Read));
        assert_eq!(required_role(&Method::GET, "/metrics", true), None);
        assert_eq!(r(Method::GET, "/v1/messages"), Some(Read));
        assert_eq!(r(Method::GET, "/api/v1/messages"), Some(Read));
        assert_eq!(r(Method::GET, "/v1/status"), Some(Read));
        assert_eq!(r(Method::GET, "/v1/cluster/members"), Some(Read));
        assert_eq!(r(Method::POST, "/v1/messages"), Some(Write));
        assert_eq!(r(Method::POST, "/api/v1/append"), Some(Write));
        assert_eq!(r(Method::POST, "/v1/cluster/members"), Some(Admin));
        assert_eq!(r(Method::DELETE, "/v1/cluster/members/n2"), Some(Admin));
        assert_eq!(
            r(Method::POST, "/v1/cluster/transfer-leadership"),
            Some(Admin)
        );
        assert_eq!(
            r(Method::GET, "/v1/cluster/transfer-leadership"),
            Some(Admin)
        );
        assert_eq!(r(Method::POST, "/v1/debug/faults"), Some(Admin));
        assert_eq!(r(Method::GET, "/v1/debug/faults"), Some(Admin));
        assert_eq!(r(Method::GET, "/nope"), Some(Read));
        assert_eq!(r(Method::GET, "/ui"), None);
        assert_eq!(r(Method::GET, "/ui/console.js"), None);
        assert_eq!(r(Method::POST, "/ui/console.js"), Some(Read));
        assert_eq!(r(Method::GET, "/uix"), Some(Read));
    }
}
