//! Requests between nodes, over NATS request/reply: each node listens on
//! `rh.<cluster>.node.<id>`. Two kinds:
//! - an HTTP request for a realm another node owns, forwarded whole (the
//!   owner runs it through its own router, guard included, and the answer
//!   goes back unchanged), so a client may talk to any node;
//! - a message delivery to a realm another node owns (see
//!   `node::messaging`): the owner appends it with its inbox cursor, which
//!   keeps delivery exactly once whatever the retries.
//!
//! The asking node retries, with backoff and a fresh read of the shard's
//! lease, while the shard has no owner or is moving, up to
//! `forward_timeout_ms`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::lease::Leases;
use super::ownership::Ownership;
use crate::node::{Delivered, Node};
use crate::realm::RealmId;
use crate::storage::OutboxKey;

/// Header marking a request already forwarded once: its receiver answers
/// it itself (503 `not_owner` if it no longer owns the shard), never
/// forwards it again.
pub const FORWARDED_HEADER: &str = "x-realmhost-forwarded";

/// An HTTP request, forwarded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HttpRequest {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// The client's address (the owner's rate limits see the client).
    pub client: Option<String>,
}

/// Its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Http(HttpRequest),
    Deliver {
        sender: String,
        seq: u64,
        index: u32,
        message: Vec<u8>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum Response {
    Http(HttpResponse),
    Delivered(Delivered),
    /// This node does not own the shard (any more).
    NotOwner,
    Error(String),
}

pub(crate) fn node_subject(cluster: &str, node: &str) -> String {
    format!("rh.{cluster}.node.{node}")
}

/// The asking side (cheap to clone: handles and an `Arc`).
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub nats: async_nats::Client,
    pub cluster: String,
    pub leases: Leases,
    pub ownership: Arc<Ownership>,
    pub timeout: Duration,
}

impl Client {
    async fn ask(&self, shard: usize, req: &Request) -> Result<Response, String> {
        let payload: bytes::Bytes = postcard::to_allocvec(req)
            .map_err(|e| e.to_string())?
            .into();
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(50);
        let mut last_error = String::from("no owner");
        loop {
            let owner = match self.ownership.owner_of(shard) {
                Some(o) => Some(o),
                None => self.refresh(shard).await,
            };
            if let Some(owner) = owner {
                let left = deadline.saturating_duration_since(Instant::now());
                let asked = tokio::time::timeout(
                    left.max(Duration::from_millis(1)),
                    self.nats
                        .request(node_subject(&self.cluster, &owner), payload.clone()),
                )
                .await;
                match asked {
                    Ok(Ok(m)) => match postcard::from_bytes::<Response>(&m.payload) {
                        Ok(Response::NotOwner) => {
                            last_error = format!("{owner} no longer owns shard {shard}")
                        }
                        Ok(Response::Error(e)) => return Err(e),
                        Ok(r) => return Ok(r),
                        Err(e) => return Err(format!("unreadable answer from {owner}: {e}")),
                    },
                    Ok(Err(e)) => last_error = format!("asking {owner}: {e}"),
                    Err(_) => last_error = format!("{owner} did not answer in time"),
                }
            }
            if Instant::now() + backoff >= deadline {
                return Err(format!(
                    "shard {shard}: no owner answered within {} ms ({last_error})",
                    self.timeout.as_millis()
                ));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
            self.refresh(shard).await;
        }
    }

    /// Read the shard's lease again.
    async fn refresh(&self, shard: usize) -> Option<String> {
        let owner = match self.leases.read(shard).await {
            Ok(l) => l.map(|l| l.value.node),
            Err(_) => None,
        };
        self.ownership.set_owner(shard, owner.clone());
        owner
    }

    /// Forward an HTTP request to the owner of `shard`.
    pub(crate) async fn http(
        &self,
        shard: usize,
        req: HttpRequest,
    ) -> Result<HttpResponse, String> {
        match self.ask(shard, &Request::Http(req)).await? {
            Response::Http(r) => Ok(r),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Have the owner of `shard` deliver message `id`.
    pub(crate) async fn deliver(
        &self,
        shard: usize,
        id: OutboxKey,
        message: Vec<u8>,
    ) -> Result<Delivered, String> {
        let req = Request::Deliver {
            sender: id.sender.to_string(),
            seq: id.seq,
            index: id.index,
            message,
        };
        match self.ask(shard, &req).await? {
            Response::Delivered(d) => Ok(d),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}

/// The router the node's HTTP server runs, set when it starts.
pub(crate) type RouterCell = OnceLock<axum::Router>;

/// Answer requests from other nodes until the subscription ends.
pub(crate) async fn serve(
    mut sub: async_nats::Subscriber,
    nats: async_nats::Client,
    node: std::sync::Weak<Node>,
    router: Arc<RouterCell>,
) {
    while let Some(msg) = sub.next().await {
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let (nats, node, router) = (nats.clone(), node.clone(), router.clone());
        tokio::spawn(async move {
            let answer = match (
                postcard::from_bytes::<Request>(&msg.payload),
                node.upgrade(),
            ) {
                (Err(e), _) => Response::Error(format!("unreadable request: {e}")),
                (Ok(_), None) => Response::NotOwner,
                (Ok(req), Some(node)) => answer(req, &node, &router).await,
            };
            let bytes = postcard::to_allocvec(&answer).unwrap_or_default();
            if let Err(e) = nats.publish(reply, bytes.into()).await {
                tracing::debug!(error = %e, "answering a forwarded request failed");
            }
        });
    }
}

async fn answer(req: Request, node: &Arc<Node>, router: &RouterCell) -> Response {
    match req {
        Request::Deliver {
            sender,
            seq,
            index,
            message,
        } => match RealmId::new(&sender) {
            Ok(sender) => {
                let id = OutboxKey { sender, seq, index };
                Response::Delivered(node.deliver_for_peer(id, &message).await)
            }
            Err(e) => Response::Error(e.to_string()),
        },
        Request::Http(h) => match router.get() {
            Some(r) => match super::http::run_forwarded(r.clone(), h).await {
                Ok(resp) => Response::Http(resp),
                Err(e) => Response::Error(e),
            },
            None => Response::NotOwner,
        },
    }
}
