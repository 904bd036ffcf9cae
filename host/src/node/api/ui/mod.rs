//! The operator page at `/ui`: a live view of the node, served by the node.
//!
//! The page, its script and its style sheet are compiled into the binary, so
//! a fresh machine needs no build step and no network to show them. The
//! page polls `GET /v1/ui/snapshot` about once a second (what it holds and
//! why it is cheap: `snapshot.rs`) and computes rates from the counters of
//! two snapshots. It reads without a token, except the list of dead letters
//! (a storage read: `GET /v1/admin/messages/dead`, read scope, fetched when
//! their count changes or every few seconds); its actions (quarantine,
//! release, swap, rollback, a dead letter's retry and drop) call the
//! existing admin routes with the token the operator types in, kept in the
//! tab's `sessionStorage` and sent as `Authorization: Bearer …`, the same
//! header the CLI sends.
//!
//! Every asset is sent with a Content-Security-Policy that lets the page load
//! scripts, styles and data from the node only, and no inline script: a realm
//! id or a fault message shown on the page cannot run as code.

mod snapshot;
mod top;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

pub use snapshot::{UiSnapshot, UiState};
pub use top::TopRealm;

use super::ApiError;
use crate::node::Node;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Scripts, styles, images and requests from the node only; no inline
/// script, no framing, no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page's routes (public scope: they change nothing).
pub(super) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route(
            "/ui",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route("/v1/ui/snapshot", get(snapshot))
}

/// An embedded asset with the page's security headers. `no-cache` makes the
/// browser revalidate, so a node upgraded in place serves its new page.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `GET /v1/ui/snapshot`: one shared body, rebuilt at most every 0.5 s
/// (see [`UiState`]).
async fn snapshot(
    State(node): State<Arc<Node>>,
    Extension(ui): Extension<Arc<UiState>>,
) -> Result<Response, ApiError> {
    let body = ui.body(&node).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("snapshot not serialized: {e}"),
        )
    })?;
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
