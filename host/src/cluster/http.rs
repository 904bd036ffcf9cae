//! Forwarding HTTP requests for realms this node does not own: a layer on
//! the realm routes (`POST /v1/events`, `GET /v1/realm`,
//! `GET /v1/realm/events`, `POST /v1/query`, `GET /v1/verify`,
//! `GET /v1/admin/realms/messages`) finds the realm, and when its
//! shard is served elsewhere sends the whole request to the owner (see
//! [`super::rpc`]) and answers with the owner's answer, status and body
//! unchanged. Clients may therefore use any node; the answer's
//! `x-realmhost-node` header names the node that served it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tower::ServiceExt;

use super::rpc::{FORWARDED_HEADER, HttpRequest, HttpResponse};
use crate::node::Node;

/// Header naming the node that served a realm request.
pub const NODE_HEADER: &str = "x-realmhost-node";

/// Largest answer carried back (a realm's whole state may be big).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The layer: serve here, or forward to the owner.
pub(crate) async fn forward(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let Some(cluster) = node.cluster_handle() else {
        return next.run(req).await;
    };
    if req.headers().contains_key(FORWARDED_HEADER) {
        // Forwarded once already: answer here, whoever owns it now.
        return tag(next.run(req).await, cluster.node_id());
    }
    let limit = node.config().http.max_body_bytes;
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                e.to_string(),
            );
        }
    };
    let realm = realm_of(&parts, &body);
    let shard = realm.as_deref().map(|r| node.shard_of(r));
    match shard {
        Some(shard) if !node.serves_shard(shard) => {
            let client = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.to_string());
            let headers = parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect();
            let fwd = HttpRequest {
                method: parts.method.as_str().to_owned(),
                uri: parts
                    .uri
                    .path_and_query()
                    .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
                headers,
                body: body.to_vec(),
                client,
            };
            let forwarded = cluster.forward_http(shard, fwd).await;
            metrics::counter!("realmhost_cluster_forwarded_total", "ok" => forwarded.is_ok().to_string())
                .increment(1);
            match forwarded {
                Ok(r) => response_of(r),
                Err(e) => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_owner",
                    format!(
                        "the realm's shard {shard} is served by another node, which could not be reached: {e}"
                    ),
                ),
            }
        }
        _ => {
            let req = Request::from_parts(parts, Body::from(body));
            tag(next.run(req).await, cluster.node_id())
        }
    }
}

fn tag(mut r: Response, node: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(node) {
        r.headers_mut().insert(NODE_HEADER, v);
    }
    r
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let mut r = (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from_static("1"),
    );
    r
}

/// The realm a request is about: `?id=` or the body's `realm_id`.
fn realm_of(parts: &axum::http::request::Parts, body: &[u8]) -> Option<String> {
    let from_query = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "id")
            .map(|(_, v)| v.into_owned())
    });
    if from_query.is_some() {
        return from_query;
    }
    #[derive(serde::Deserialize)]
    struct Body {
        realm_id: String,
    }
    serde_json::from_slice::<Body>(body)
        .ok()
        .map(|b| b.realm_id)
}

fn response_of(r: HttpResponse) -> Response {
    let mut resp = Response::new(Body::from(r.body));
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::from_bytes(&v)) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

/// Run a forwarded request through this node's router.
pub(crate) async fn run_forwarded(
    router: axum::Router,
    h: HttpRequest,
) -> Result<HttpResponse, String> {
    let mut req = Request::builder()
        .method(h.method.as_str())
        .uri(h.uri.as_str())
        .body(Body::from(h.body))
        .map_err(|e| e.to_string())?;
    for (k, v) in h.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::from_bytes(&v)) {
            req.headers_mut().append(k, v);
        }
    }
    req.headers_mut()
        .insert(FORWARDED_HEADER, HeaderValue::from_static("1"));
    let client = h
        .client
        .and_then(|c| c.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    req.extensions_mut().insert(ConnectInfo(client));
    let Ok(resp) = router.oneshot(req).await;
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    Ok(HttpResponse {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_realm_comes_from_the_query_or_the_body() {
        let req = Request::builder()
            .uri("/v1/realm?limit=3&id=bank%2Da+x")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        assert_eq!(realm_of(&parts, b"").as_deref(), Some("bank-a x"));
        let req = Request::builder().uri("/v1/events").body(()).unwrap();
        let (parts, ()) = req.into_parts();
        assert_eq!(
            realm_of(&parts, br#"{"realm_id":"r1","kind":"k"}"#).as_deref(),
            Some("r1")
        );
        assert_eq!(realm_of(&parts, b"not json"), None);
    }
}
