//! What stands in front of the handlers: authentication by scope, and the
//! bounds on what unauthenticated clients can make the node spend.
//!
//! Every layer here runs **before any request body is read**, so a client
//! without a token cannot make the node buffer an upload, replay a log or
//! change anything.
//!
//! | scope | routes | token |
//! |---|---|---|
//! | public | health, appends, realm views and events, queries, listings, stats, metrics, the `/ui` page and its snapshot | none |
//! | read | verify, shadow replay, jobs, parked and unservable realms, messages (a realm's, a chain, dead letters) | `read_token` or `admin_token` |
//! | admin | everything else under `/v1/admin` (dead letters' retry and drop among them) | `admin_token` |
//!
//! Tokens are compared in constant time. Public routes are bounded by:
//! - a token bucket per client address (429 `rate_limited`, `Retry-After`);
//! - `max_concurrent_requests` in flight across all routes (503
//!   `overloaded`, `Retry-After`);
//! - `max_buffered_body_bytes`: each request reserves its `Content-Length`
//!   (or `max_body_bytes` without one) before its body is read, so bodies
//!   buffered at once never exceed the budget (503 `overloaded`);
//! - `request_timeout_secs` (503 `timeout`).
//!
//! Appends are also limited per event `source` (checked in the handler,
//! where the source is known, before any plugin runs).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::Semaphore;

use super::ApiError;
use crate::node::Node;
use crate::node::config::{HttpConfig, RateLimitConfig};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read-only operator routes that replay logs or list operator state.
    Read,
    /// Routes that change the node.
    Admin,
}

/// Shared state of the guard layers, one per router.
#[derive(Debug)]
pub struct Guard {
    admin_token: Option<String>,
    read_token: Option<String>,
    in_flight: Arc<Semaphore>,
    body_budget: Arc<Semaphore>,
    max_body_bytes: usize,
    timeout: Duration,
    clients: Option<Buckets<IpAddr>>,
    sources: Option<Buckets<String>>,
}

/// A keyed token bucket with a bound on the keys it remembers.
#[derive(Debug)]
struct Buckets<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    per_sec: u32,
    max_tracked: usize,
}

impl<K: std::hash::Hash + Eq + Clone> Buckets<K> {
    fn new(per_sec: u32, burst: u32, max_tracked: usize) -> Self {
        let quota = Quota::per_second(NonZeroU32::new(per_sec.max(1)).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN));
        Self {
            limiter: governor::RateLimiter::keyed(quota),
            per_sec,
            max_tracked,
        }
    }

    /// `Err(seconds to wait)` when `key` is over its rate, or when too many
    /// keys are remembered to take a new one.
    fn check(&self, key: &K) -> Result<(), u64> {
        if self.limiter.len() >= self.max_tracked {
            // Forget keys whose buckets are full again; if that is not
            // enough, a new key waits like a limited one.
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            if self.limiter.len() >= self.max_tracked {
                return Err(1);
            }
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            wait.as_secs()
                .max(1)
                .min(u64::from(60 / self.per_sec.max(1)).max(1))
        })
    }
}

fn rate_limited(what: &str, retry_after: u64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests from this {what}; retry in {retry_after} s"),
    )
    .retry_after(retry_after)
}

fn overloaded(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        format!("the node is at its limit of {what}; retry shortly"),
    )
    .retry_after(1)
}

impl Guard {
    /// The guard for a node's HTTP configuration.
    pub fn new(http: &HttpConfig) -> Self {
        let r: &RateLimitConfig = &http.rate_limit;
        Self {
            admin_token: http.admin_token.clone(),
            read_token: http.read_token.clone(),
            in_flight: Arc::new(Semaphore::new(http.max_concurrent_requests)),
            body_budget: Arc::new(Semaphore::new(
                u32::try_from(http.max_buffered_body_bytes.div_ceil(1024)).unwrap_or(u32::MAX)
                    as usize,
            )),
            max_body_bytes: http.max_body_bytes,
            timeout: Duration::from_secs(http.request_timeout_secs),
            clients: r
                .enabled
                .then(|| Buckets::new(r.per_client_per_sec, r.per_client_burst, r.max_tracked)),
            sources: r
                .enabled
                .then(|| Buckets::new(r.per_source_per_sec, r.per_source_burst, r.max_tracked)),
        }
    }

    /// Check the bearer token of a request against `scope`.
    pub fn authorize(&self, scope: Scope, headers: &HeaderMap) -> Result<(), ApiError> {
        let accepted: Vec<&str> = match scope {
            Scope::Admin => self.admin_token.iter().map(String::as_str).collect(),
            Scope::Read => self
                .admin_token
                .iter()
                .chain(self.read_token.iter())
                .map(String::as_str)
                .collect(),
        };
        if accepted.is_empty() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "this route is disabled: set http.admin_token (or http.read_token for read-only routes) in the node config",
            ));
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            // Compare with every accepted token, so the time taken does not
            // say which one (or whether any) matched.
            Some(t) => {
                let ok = accepted.iter().fold(false, |acc, e| {
                    acc | constant_time_eq(t.as_bytes(), e.as_bytes())
                });
                if ok {
                    Ok(())
                } else {
                    Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "bad_token",
                        "the token is wrong for this route",
                    ))
                }
            }
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "this route needs `Authorization: Bearer <token>`",
            )),
        }
    }

    /// Limit appends per event source.
    pub fn check_source(&self, source: &str) -> Result<(), ApiError> {
        match &self.sources {
            Some(b) => b
                .check(&source.to_owned())
                .map_err(|s| rate_limited("event source", s)),
            None => Ok(()),
        }
    }
}

/// Constant-time equality of two byte strings (length excepted).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Layer: every request holds one of `max_concurrent_requests` permits.
pub async fn concurrency(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    match node.http_guard().in_flight.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => overloaded("concurrent requests").into_response(),
    }
}

/// Layer for read-scope routes.
pub async fn read_scope(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    match node.http_guard().authorize(Scope::Read, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Layer for admin-scope routes.
pub async fn admin_scope(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    match node.http_guard().authorize(Scope::Admin, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Layer for public routes: the client's token bucket, the body budget and
/// the time limit.
pub async fn public(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let guard = node.http_guard();
    if let Some(clients) = &guard.clients {
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        if let Err(s) = clients.check(&ip) {
            return rate_limited("client address", s).into_response();
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let reserve = match declared {
        // A body larger than the limit is refused by the body limit anyway;
        // reserve no more than it can hold.
        Some(n) => n.min(guard.max_body_bytes),
        None if req.method() == axum::http::Method::GET => 0,
        None => guard.max_body_bytes,
    };
    let kib = u32::try_from(reserve.div_ceil(1024)).unwrap_or(u32::MAX);
    let _budget = if kib > 0 {
        match guard.body_budget.clone().try_acquire_many_owned(kib) {
            Ok(p) => Some(p),
            Err(_) => return overloaded("buffered request bytes").into_response(),
        }
    } else {
        None
    };
    match tokio::time::timeout(guard.timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} s", guard.timeout.as_secs()),
        )
        .retry_after(1)
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(admin: Option<&str>, read: Option<&str>) -> Guard {
        Guard::new(&HttpConfig {
            admin_token: admin.map(str::to_owned),
            read_token: read.map(str::to_owned),
            ..HttpConfig::default()
        })
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn scopes_accept_the_right_tokens() {
        let g = guard(Some("admin-token"), Some("read-token"));
        assert!(g.authorize(Scope::Admin, &bearer("admin-token")).is_ok());
        assert!(g.authorize(Scope::Read, &bearer("admin-token")).is_ok());
        assert!(g.authorize(Scope::Read, &bearer("read-token")).is_ok());
        let e = g
            .authorize(Scope::Admin, &bearer("read-token"))
            .unwrap_err();
        assert_eq!(e.code(), "bad_token");
        let e = g.authorize(Scope::Admin, &HeaderMap::new()).unwrap_err();
        assert_eq!(e.code(), "missing_token");
        let off = guard(None, None);
        assert_eq!(
            off.authorize(Scope::Read, &bearer("x")).unwrap_err().code(),
            "admin_disabled"
        );
    }

    #[test]
    fn buckets_limit_each_key_and_bound_the_keys() {
        let b = Buckets::<String>::new(1, 3, 2);
        for _ in 0..3 {
            assert!(b.check(&"a".to_owned()).is_ok());
        }
        assert!(b.check(&"a".to_owned()).is_err(), "burst exhausted");
        assert!(
            b.check(&"b".to_owned()).is_ok(),
            "another key has its own bucket"
        );
        // Two keys remembered, neither idle: a third is refused.
        assert!(b.check(&"c".to_owned()).is_err());
    }
}
