//! Sending what the node owes Supabase: the outbox entries its store keeps (removed peers' final
//! rows, summaries of an overflowing outbox), in batches, acknowledged per batch so that the
//! store deletes exactly what arrived.
//!
//! A batch Supabase refuses for good (a 4xx other than the missing server row) is split and its
//! rows sent one by one, so one bad row cannot hold the rest back; a row refused on its own is
//! parked: kept in the store, counted in the health, skipped until the next start.
use std::collections::HashSet;

use serde_json::Value;

use super::client::Rest;
use super::error::ControlError;
use super::health::HealthHandle;
use super::{NodeSource, Owed, OwedKind};

pub(super) const SESSIONS: &str = "vpn_sessions";
pub(super) const SESSIONS_KEY: &str = "server_id,peer_id";
const SUMMARIES: &str = "waylume_usage_summaries";
const SUMMARIES_KEY: &str = "server_id,id";
/// PostgreSQL's foreign key violation: the server row is gone, so register again.
pub(super) const FK_VIOLATION: &str = "23503";

pub(super) struct Sender<'a> {
    pub rest: &'a Rest,
    pub source: &'a dyn NodeSource,
    pub server_id: &'a str,
    pub batch: usize,
    pub parked: &'a mut HashSet<i64>,
    pub health: &'a HealthHandle,
}

impl Sender<'_> {
    /// Sends every owed entry once, oldest first. Stops at the first error worth retrying (the
    /// rest waits for the next round) and returns it.
    pub async fn send_all(&mut self) -> Result<usize, ControlError> {
        let mut after = 0;
        let mut sent = 0;
        loop {
            let owed = self.source.owed(after, self.batch.max(1)).await;
            let Some(last) = owed.last() else {
                return Ok(sent);
            };
            after = last.id;
            let todo: Vec<Owed> = owed
                .into_iter()
                .filter(|o| !self.parked.contains(&o.id))
                .collect();
            for kind in [OwedKind::Session, OwedKind::Summary] {
                let batch: Vec<Owed> = todo.iter().filter(|o| o.kind == kind).cloned().collect();
                if !batch.is_empty() {
                    sent += self.send_batch(kind, &batch).await?;
                }
            }
        }
    }

    async fn send_batch(&mut self, kind: OwedKind, batch: &[Owed]) -> Result<usize, ControlError> {
        match self.post(kind, batch).await {
            Ok(()) => {
                self.source.acknowledge(batch).await;
                Ok(batch.len())
            }
            Err(e) if e.is_retryable() || e.code() == Some(FK_VIOLATION) => Err(e),
            Err(e) if batch.len() == 1 => {
                log::warn!(
                    "supabase: outbox entry {} refused ({e}); kept in the store, retried after a restart",
                    batch[0].id
                );
                self.parked.insert(batch[0].id);
                self.health.add_parked(1);
                Ok(0)
            }
            Err(_) => {
                let mut n = 0;
                for one in batch {
                    n += Box::pin(self.send_batch(kind, std::slice::from_ref(one))).await?;
                }
                Ok(n)
            }
        }
    }

    async fn post(&self, kind: OwedKind, batch: &[Owed]) -> Result<(), ControlError> {
        let (table, key) = match kind {
            OwedKind::Session => (SESSIONS, SESSIONS_KEY),
            OwedKind::Summary => (SUMMARIES, SUMMARIES_KEY),
        };
        let rows: Vec<Value> = dedup(batch)
            .into_iter()
            .map(|o| {
                let mut body = o.body.clone();
                if let Some(obj) = body.as_object_mut() {
                    obj.insert("server_id".into(), Value::String(self.server_id.into()));
                }
                body
            })
            .collect();
        self.rest.upsert(table, key, &rows).await
    }
}

/// One row per conflict key and batch: PostgreSQL refuses an upsert that touches the same row
/// twice (21000). The newest entry wins.
fn dedup(batch: &[Owed]) -> Vec<&Owed> {
    let key = |o: &Owed| {
        let field = if o.kind == OwedKind::Session {
            "peer_id"
        } else {
            "id"
        };
        o.body.get(field).map(Value::to_string).unwrap_or_default()
    };
    let mut seen = HashSet::new();
    let mut out: Vec<&Owed> = batch.iter().rev().filter(|o| seen.insert(key(o))).collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keeps_the_newest_entry_per_key() {
        let o = |id, peer: &str| Owed {
            id,
            rev: 0,
            kind: OwedKind::Session,
            body: serde_json::json!({"peer_id": peer, "rx_bytes": id}),
        };
        let batch = [o(1, "a"), o(2, "b"), o(3, "a")];
        let ids: Vec<i64> = dedup(&batch).iter().map(|o| o.id).collect();
        assert_eq!(ids, [2, 3]);
    }
}
