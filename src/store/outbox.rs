//! The outbox: what the node owes Supabase (a removed peer's final usage row, summaries), kept
//! in the store until Supabase acknowledges it, so that an outage or a restart loses nothing.
//!
//! A removal writes its final row in the same transaction that deletes the peer: either both
//! happen or neither. The outbox is bounded: past [`Store::set_outbox_limit`] final rows, the
//! oldest are folded into one summary row (sessions, bytes, first and last removal) that goes
//! to `waylume_usage_summaries`; nothing is dropped without a trace. An acknowledgement names
//! the revision it saw, so a summary that grew while it was in flight is not deleted.
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::{Value, json};

use super::{Store, StoreError};
use crate::core::peer::PeerId;

/// About 50 000 × 0.5 KB: 25 MB of disk at most, days of removals on a busy node.
pub(super) const DEFAULT_LIMIT: u64 = 50_000;

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub rev: i64,
    /// `session` or `summary`.
    pub kind: String,
    pub body: Value,
    /// Unix seconds when it was written.
    pub created_at: u64,
}

impl Store {
    pub fn set_outbox_limit(&mut self, limit: u64) {
        self.outbox_limit = limit.max(1);
    }

    /// Deletes a peer and, in the same transaction, records what it still owes (its final
    /// usage row). Returns whether the peer was there.
    pub fn delete_peer_owing(
        &mut self,
        id: &PeerId,
        owed: Option<&Value>,
        now: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.delete_peers_owing(&[(id, owed)], now)? > 0)
    }

    /// Deletes peers and, in the same transaction, records what each still owes: all of them
    /// or none. Returns how many were there.
    pub fn delete_peers_owing(
        &mut self,
        gone: &[(&PeerId, Option<&Value>)],
        now: u64,
    ) -> Result<usize, StoreError> {
        let limit = self.outbox_limit;
        let path = self.path.clone();
        let db = |source| StoreError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(&db)?;
        let mut n = 0;
        let mut owing = false;
        for (id, owed) in gone {
            n += tx
                .prepare_cached("DELETE FROM peers WHERE id = ?1")
                .and_then(|mut st| st.execute([id.as_str()]))
                .map_err(&db)?;
            if let Some(body) = owed.filter(|v| !v.is_null()) {
                push(&tx, "session", body, now).map_err(&db)?;
                owing = true;
            }
        }
        // Once per transaction: folding counts the outbox, which a removal of thousands
        // should not do thousands of times.
        if owing {
            fold(&tx, limit, now).map_err(&db)?;
        }
        tx.commit().map_err(&db)?;
        Ok(n)
    }

    /// Up to `limit` entries with an id above `after`, oldest first.
    pub fn owed(&self, after: i64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, rev, kind, body, created_at FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(self.db())?;
        let rows = st
            .query_map(params![after, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(self.db())?;
        let mut out = Vec::new();
        for r in rows {
            let (id, rev, kind, body, created) = r.map_err(self.db())?;
            let body = serde_json::from_str(&body).map_err(|_| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("outbox entry {id}"),
            })?;
            out.push(OutboxRow {
                id,
                rev,
                kind,
                body,
                created_at: created.max(0) as u64,
            });
        }
        Ok(out)
    }

    /// Deletes entries Supabase has, each only if still at the revision that was sent.
    pub fn ack_owed(&mut self, done: &[(i64, i64)]) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let db = |source| StoreError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(&db)?;
        let mut n = 0;
        {
            let mut st = tx
                .prepare_cached("DELETE FROM outbox WHERE id = ?1 AND rev = ?2")
                .map_err(&db)?;
            for (id, rev) in done {
                n += st.execute(params![id, rev]).map_err(&db)?;
            }
        }
        tx.commit().map_err(&db)?;
        Ok(n)
    }

    /// (final session rows, summary rows) waiting.
    pub fn owed_count(&self) -> Result<(u64, u64), StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FILTER (WHERE kind = 'session'), count(*) FILTER (WHERE kind = 'summary') FROM outbox",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(self.db())
    }
}

fn push(tx: &Transaction, kind: &str, body: &Value, now: u64) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO outbox (kind, body, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![kind, body.to_string(), now as i64])?;
    Ok(())
}

/// Folds the oldest final rows beyond `limit` into the newest summary (or a new one).
fn fold(tx: &Transaction, limit: u64, now: u64) -> rusqlite::Result<()> {
    let count: i64 = tx.query_row(
        "SELECT count(*) FROM outbox WHERE kind = 'session'",
        [],
        |r| r.get(0),
    )?;
    let excess = count - limit as i64;
    if excess <= 0 {
        return Ok(());
    }
    let oldest: Vec<(i64, String, i64)> = tx
        .prepare_cached(
            "SELECT id, body, created_at FROM outbox WHERE kind = 'session' ORDER BY id LIMIT ?1",
        )?
        .query_map([excess], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let (mut rx, mut tx_bytes, mut first, mut last) = (0u64, 0u64, u64::MAX, 0u64);
    for (id, body, at) in &oldest {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        rx = rx.saturating_add(n("rx_bytes"));
        tx_bytes = tx_bytes.saturating_add(n("tx_bytes"));
        first = first.min(*at as u64);
        last = last.max(*at as u64);
        tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
            .execute([id])?;
    }
    let open: Option<(i64, String)> = tx
        .query_row(
            "SELECT id, body FROM outbox WHERE kind = 'summary' ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let stamp =
        |t: u64| crate::control::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
    match open {
        Some((id, body)) => {
            let mut v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
            let merged = json!({
                "id": v.get("id").cloned().unwrap_or(Value::Null),
                "sessions": n(&v, "sessions") + oldest.len() as u64,
                "rx_bytes": n(&v, "rx_bytes").saturating_add(rx),
                "tx_bytes": n(&v, "tx_bytes").saturating_add(tx_bytes),
                "first_removed_at": v.get_mut("first_removed_at").map(Value::take).unwrap_or_else(|| stamp(first).into()),
                "last_removed_at": stamp(last),
            });
            tx.prepare_cached("UPDATE outbox SET body = ?2, rev = rev + 1 WHERE id = ?1")?
                .execute(params![id, merged.to_string()])?;
        }
        None => {
            log::warn!(
                "outbox full ({limit} final usage rows): summarising the oldest into one row until Supabase takes them"
            );
            let id = format!("{now}-{}", oldest.first().map_or(0, |o| o.0));
            let body = json!({
                "id": id,
                "sessions": oldest.len(),
                "rx_bytes": rx,
                "tx_bytes": tx_bytes,
                "first_removed_at": stamp(first),
                "last_removed_at": stamp(last),
            });
            push(tx, "summary", &body, now)?;
        }
    }
    Ok(())
}
