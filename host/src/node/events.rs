//! A realm's stored events, paged, with each payload decoded to JSON by the
//! active plugin of its realm type (the `decode-event` export) when it can.

use serde::{Deserialize, Serialize};

use super::{Node, NodeError, exec};
use crate::realm::RealmId;

/// Most events one page holds.
pub const MAX_EVENTS_PAGE: usize = 1000;

/// One stored event, as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    /// Position in the realm's log.
    pub seq: u64,
    /// Label chosen by the appender.
    pub kind: String,
    /// The entity that caused it.
    pub source: String,
    /// The realm it crossed over from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_realm: Option<String>,
    /// Host time at append, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Reputation of the source's shard when it was appended.
    pub source_reputation: f64,
    /// The payload as the plugin shows it (JSON; plain text as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// The raw payload, hex, when it could not be decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
    /// Why the payload could not be decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_error: Option<String>,
    /// Set when the event is a delivered message (its origin) or a reply
    /// (the outcome of a message the realm sent; a reply has no payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<crate::message::Inbound>,
}

/// A page of [`Node::events`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsPage {
    /// The realm.
    pub realm_id: String,
    /// Its realm type.
    pub realm_type: String,
    /// The realm's last seq.
    pub last_seq: u64,
    /// Events after the requested seq, in order.
    pub events: Vec<EventView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

impl Node {
    /// At most `limit` (1..=[`MAX_EVENTS_PAGE`]) of a realm's events after
    /// seq `after`, payloads decoded by the active plugin. An event the
    /// plugin cannot decode (or a realm type without a plugin) is shown with
    /// its raw bytes and the reason.
    pub async fn events(
        &self,
        id: &RealmId,
        after: u64,
        limit: usize,
    ) -> Result<EventsPage, NodeError> {
        let limit = limit.clamp(1, MAX_EVENTS_PAGE);
        // The reads may touch the disk: on a blocking thread.
        let (storage, rid) = (self.storage.clone(), id.clone());
        let handle = tokio::runtime::Handle::current();
        let (meta, records) = exec::blocking_io("events read", move || {
            handle.block_on(async {
                let Some(meta) = storage.realm_meta(&rid).await? else {
                    return Err(NodeError::RealmNotFound(rid.clone()));
                };
                let records = storage.events_page(&rid, after, limit).await?;
                Ok((meta, records))
            })
        })
        .await??;
        let plugin = self
            .registry
            .get(&meta.realm_type)
            .map_err(|e| e.to_string());
        // One sandbox call per event: on the plugin-execution pool.
        let events = self
            .run_plugin(&meta.realm_type, move || {
                records
                    .into_iter()
                    .map(|r| {
                        let is_reply = r.message.as_ref().is_some_and(|m| m.reply.is_some());
                        let decoded = match &plugin {
                            // A reply's payload is the host's: nothing to decode.
                            _ if is_reply => Ok(serde_json::Value::Null),
                            Err(e) => Err(e.clone()),
                            Ok(p) => match p.decode_event(&r.kind, &r.payload) {
                                Ok(Ok(text)) => Ok(serde_json::from_str(&text)
                                    .unwrap_or(serde_json::Value::String(text))),
                                Ok(Err(e)) => Err(e),
                                Err(e) => Err(e.to_string()),
                            },
                        };
                        let (payload, payload_hex, decode_error) = match decoded {
                            Ok(serde_json::Value::Null) if is_reply => (None, None, None),
                            Ok(v) => (Some(v), None, None),
                            Err(e) => (None, Some(hex::encode(&r.payload)), Some(e)),
                        };
                        EventView {
                            seq: r.seq,
                            kind: r.kind,
                            source: r.source,
                            source_realm: r.source_realm,
                            timestamp_ms: r.timestamp_ms,
                            source_reputation: r.source_reputation,
                            payload,
                            payload_hex,
                            decode_error,
                            message: r.message.map(|m| *m),
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
        let next_after = events.last().map(|e| e.seq).filter(|&s| s < meta.last_seq);
        Ok(EventsPage {
            realm_id: id.to_string(),
            realm_type: meta.realm_type,
            last_seq: meta.last_seq,
            events,
            next_after,
        })
    }
}
