//! The web console (`GET /ui`): a small vanilla HTML/CSS/JS page embedded in the
//! binary, so every node serves it with no files to deploy and nothing fetched
//! from elsewhere.
//!
//! Why embedded and static: the console is only a client of the public API
//! (`/v1/status`, `/metrics`, `/v1/messages`, the stream, the admin routes); it
//! holds no server-side state, so serving it can neither change nor leak anything.
//!
//! Invariants:
//! - The page and its assets are open (no token; see `auth::required_role`): they
//!   are the same for everyone. Every API call the page makes is checked as usual;
//!   the token a user pastes is kept in `sessionStorage` only.
//! - Every response carries a Content-Security-Policy allowing only `'self'` (no
//!   inline script or style, no framing), `nosniff` and `no-referrer`.
//! - Caching: everything is `no-cache` with a strong ETag (a hash of the content),
//!   so a browser revalidates and gets a 304, and an upgraded node is never
//!   served stale assets.
//! - An unknown asset is a JSON 404 like every other unknown route.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Map;
use std::sync::OnceLock;

use super::error::error_response;

/// The policy every console response carries.
pub const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// One embedded file: its name under `/ui/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("ui/index.html"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("ui/console.css"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("ui/console.js"),
    },
];

/// The console routes: `/ui`, `/ui/` (the page) and `/ui/<asset>`.
pub fn router() -> Router {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/:asset", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => serve(i, &headers),
        None => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such console asset",
            Map::new(),
        ),
    }
}

/// The ETags of the assets, computed once: `"<first 16 hex digits of SHA-256>"`.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let d = ring::digest::digest(&ring::digest::SHA256, a.body.as_bytes());
                let hex: String = d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

fn serve(i: usize, headers: &HeaderMap) -> Response {
    let a = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, inm: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(t) = inm {
            req = req.header(header::IF_NONE_MATCH, t);
        }
        router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header_of(r: &Response, h: header::HeaderName) -> &str {
        r.headers().get(h).unwrap().to_str().unwrap()
    }

    #[tokio::test]
    async fn serves_the_page_and_assets_with_types_csp_and_cache_headers() {
        for (path, ct) in [
            ("/ui", "text/html; charset=utf-8"),
            ("/ui/", "text/html; charset=utf-8"),
            ("/ui/index.html", "text/html; charset=utf-8"),
            ("/ui/console.css", "text/css; charset=utf-8"),
            ("/ui/console.js", "text/javascript; charset=utf-8"),
        ] {
            let r = get(path, None).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(header_of(&r, header::CONTENT_TYPE), ct, "{path}");
            assert_eq!(header_of(&r, header::CONTENT_SECURITY_POLICY), CSP);
            assert_eq!(header_of(&r, header::CACHE_CONTROL), "no-cache");
            assert_eq!(header_of(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert!(header_of(&r, header::ETAG).starts_with('"'), "{path}");
        }
        assert!(CSP.contains("default-src 'self'") && CSP.contains("frame-ancestors 'none'"));
    }

    #[tokio::test]
    async fn the_page_references_only_its_own_assets() {
        let html = ASSETS[0].body;
        assert!(html.contains("src=\"/ui/console.js\""));
        assert!(html.contains("href=\"/ui/console.css\""));
        for a in ASSETS {
            // The SVG namespace is a name, not a request.
            let body = a.body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{}",
                a.name
            );
            assert!(
                !body.contains("//fonts") && !body.contains("@import"),
                "{}",
                a.name
            );
            assert!(!a.body.contains("style=\""), "inline style in {}", a.name);
        }
        assert!(!html.contains("<script>"), "inline script");
    }

    #[tokio::test]
    async fn a_matching_etag_gets_304_and_another_gets_the_body() {
        let etag = header_of(&get("/ui/console.js", None).await, header::ETAG).to_string();
        let r = get("/ui/console.js", Some(&etag)).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header_of(&r, header::ETAG), etag);
        let r = get("/ui/console.js", Some("\"other\"")).await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_assets_are_json_404s() {
        for path in ["/ui/nope.js", "/ui/..%2Fconfig.toml", "/ui/console.js/x"] {
            let r = get(path, None).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
            if path != "/ui/console.js/x" {
                let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["error"]["code"], "not_found");
            }
        }
    }
}
