//! Embedded state under the state directory: peers, their limits and caps, and usage totals in
//! SQLite; the interface private key in its own 0600 file.
//!
//! Every write is one transaction; the journal is WAL with full sync, so a crash at any point
//! leaves a database that opens with either the old or the new state.
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, params};
use wireguard_control::Key;

use crate::core::peer::{Accounting, Peer, PeerId, SpeedLimit, Usage};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("store {path} holds a bad value in {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("store {path} has schema version {found}, newer than this build knows ({known})")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

/// Each entry upgrades the schema by one version; never edit a released one.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE peers (
    id             TEXT PRIMARY KEY,
    public_key     TEXT NOT NULL UNIQUE,
    private_key    TEXT,
    preshared_key  TEXT NOT NULL,
    address        TEXT NOT NULL UNIQUE,
    address_v6     TEXT,
    session_id     TEXT UNIQUE,
    user_id        TEXT,
    download_kbps  INTEGER,
    upload_kbps    INTEGER,
    data_cap       INTEGER,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    rx_total       INTEGER NOT NULL DEFAULT 0,
    tx_total       INTEGER NOT NULL DEFAULT 0,
    rx_seen        INTEGER NOT NULL DEFAULT 0,
    tx_seen        INTEGER NOT NULL DEFAULT 0,
    cap_used       INTEGER NOT NULL DEFAULT 0,
    last_handshake INTEGER
);
",
    r"
-- What the node owes Supabase, kept until acknowledged (see store/outbox.rs).
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    rev        INTEGER NOT NULL DEFAULT 0,
    kind       TEXT NOT NULL CHECK (kind IN ('session', 'summary')),
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX outbox_kind ON outbox (kind, id);
",
];

/// A peer as stored, with what the node has counted for it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPeer {
    pub peer: Peer,
    pub accounting: Accounting,
    /// Bytes the kernel's quota has counted against the data cap.
    pub cap_used: u64,
    pub last_handshake: Option<u64>,
}

/// Counters to persist for one peer.
pub struct UsageRow<'a> {
    pub id: &'a PeerId,
    pub accounting: Accounting,
    pub cap_used: u64,
    pub last_handshake: Option<u64>,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Most final session rows the outbox holds before the oldest are summarised.
    outbox_limit: u64,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let dir_err = |source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
        let path = dir.join("state.db");
        let db = |source| StoreError::Db {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(db)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
        )
        .map_err(db)?;
        let mut store = Store {
            conn,
            path,
            outbox_limit: outbox::DEFAULT_LIMIT,
        };
        store.migrate()?;
        std::fs::set_permissions(&store.path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| StoreError::Dir {
                path: store.path.clone(),
                source,
            },
        )?;
        Ok(store)
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Db {
            path: self.path.clone(),
            source,
        }
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let db = |source| StoreError::Db {
            path: path.clone(),
            source,
        };
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path,
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction().map_err(db)?;
            tx.execute_batch(sql).map_err(db)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(db)?;
            tx.commit().map_err(db)?;
            log::info!("store schema migrated to version {}", i + 1);
        }
        Ok(())
    }

    /// A cheap read that fails when the database has become unusable.
    pub fn check(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM peers", [], |r| r.get::<_, i64>(0))
            .map_err(self.db())?;
        Ok(())
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(self.db())
    }

    pub fn insert_peer(&mut self, p: &Peer) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO peers (id, public_key, private_key, preshared_key, address, address_v6,
                    session_id, user_id, download_kbps, upload_kbps, data_cap, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    p.id.as_str(),
                    p.public_key.to_base64(),
                    p.private_key.as_ref().map(Key::to_base64),
                    p.preshared_key.to_base64(),
                    p.address.to_string(),
                    p.address_v6.map(|a| a.to_string()),
                    p.session_id,
                    p.user_id,
                    p.limit.download_kbps,
                    p.limit.upload_kbps,
                    p.data_cap.map(|c| c as i64),
                    p.created_at as i64,
                    p.expires_at.map(|e| e as i64),
                ],
            )
            .map_err(self.db())?;
        Ok(())
    }

    /// Returns whether the peer was there.
    pub fn delete_peer(&mut self, id: &PeerId) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM peers WHERE id = ?1", [id.as_str()])
            .map_err(self.db())?;
        Ok(n > 0)
    }

    pub fn set_limit(&mut self, id: &PeerId, l: SpeedLimit) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE peers SET download_kbps = ?2, upload_kbps = ?3 WHERE id = ?1",
                params![id.as_str(), l.download_kbps, l.upload_kbps],
            )
            .map_err(self.db())?;
        Ok(())
    }

    pub fn set_cap(&mut self, id: &PeerId, cap: Option<u64>) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE peers SET data_cap = ?2 WHERE id = ?1",
                params![id.as_str(), cap.map(|c| c as i64)],
            )
            .map_err(self.db())?;
        Ok(())
    }

    /// Persists counters for many peers in one transaction.
    pub fn save_usage(&mut self, rows: &[UsageRow]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let db = |source| StoreError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(db)?;
        {
            let mut st = tx
                .prepare_cached(
                    "UPDATE peers SET rx_total = ?2, tx_total = ?3, rx_seen = ?4, tx_seen = ?5,
                        cap_used = ?6, last_handshake = ?7 WHERE id = ?1",
                )
                .map_err(db)?;
            for r in rows {
                let a = r.accounting;
                st.execute(params![
                    r.id.as_str(),
                    a.total.rx as i64,
                    a.total.tx as i64,
                    a.seen.rx as i64,
                    a.seen.tx as i64,
                    r.cap_used as i64,
                    r.last_handshake.map(|t| t as i64),
                ])
                .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    pub fn load_peers(&self) -> Result<Vec<StoredPeer>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, public_key, private_key, preshared_key, address, address_v6, session_id,
                    user_id, download_kbps, upload_kbps, data_cap, created_at, expires_at,
                    rx_total, tx_total, rx_seen, tx_seen, cap_used, last_handshake
                 FROM peers ORDER BY created_at, id",
            )
            .map_err(self.db())?;
        let rows = st.query_map([], raw_row).map_err(self.db())?;
        let mut out = Vec::new();
        for r in rows {
            let raw = r.map_err(self.db())?;
            out.push(raw.decode().map_err(|what| StoreError::Corrupt {
                path: self.path.clone(),
                what,
            })?);
        }
        Ok(out)
    }

    pub fn peer_exists(&self, id: &PeerId) -> Result<bool, StoreError> {
        let found: Option<i64> = self
            .conn
            .query_row("SELECT 1 FROM peers WHERE id = ?1", [id.as_str()], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.db())?;
        Ok(found.is_some())
    }
}

struct RawRow {
    text: [Option<String>; 8],
    ints: [Option<i64>; 11],
}

fn raw_row(r: &Row) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        text: [
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ],
        ints: [
            r.get(8)?,
            r.get(9)?,
            r.get(10)?,
            r.get(11)?,
            r.get(12)?,
            r.get(13)?,
            r.get(14)?,
            r.get(15)?,
            r.get(16)?,
            r.get(17)?,
            r.get(18)?,
        ],
    })
}

impl RawRow {
    fn decode(self) -> Result<StoredPeer, String> {
        let [id, public, private, psk, addr, addr6, session, user] = self.text;
        let [
            down,
            up,
            cap,
            created,
            expires,
            rx_t,
            tx_t,
            rx_s,
            tx_s,
            cap_used,
            hs,
        ] = self.ints;
        let key = |s: Option<String>, what: &str| {
            s.as_deref()
                .and_then(|k| Key::from_base64(k).ok())
                .ok_or_else(|| what.to_string())
        };
        let u64_of = |v: Option<i64>| v.map(|x| x.max(0) as u64);
        let u32_of = |v: Option<i64>, what: &str| {
            v.map(|x| u32::try_from(x).map_err(|_| what.to_string()))
                .transpose()
        };
        let id = id.as_deref().and_then(PeerId::parse).ok_or("peers.id")?;
        let address: Ipv4Addr = addr
            .as_deref()
            .and_then(|a| a.parse().ok())
            .ok_or("peers.address")?;
        let address_v6 = match addr6 {
            Some(a) => Some(a.parse::<Ipv6Addr>().map_err(|_| "peers.address_v6")?),
            None => None,
        };
        let peer = Peer {
            id,
            public_key: key(public, "peers.public_key")?,
            private_key: private
                .map(|p| key(Some(p), "peers.private_key"))
                .transpose()?,
            preshared_key: key(psk, "peers.preshared_key")?,
            address,
            address_v6,
            session_id: session,
            user_id: user,
            limit: SpeedLimit {
                download_kbps: u32_of(down, "peers.download_kbps")?,
                upload_kbps: u32_of(up, "peers.upload_kbps")?,
            },
            data_cap: u64_of(cap),
            created_at: u64_of(created).unwrap_or(0),
            expires_at: u64_of(expires),
        };
        Ok(StoredPeer {
            peer,
            accounting: Accounting {
                total: Usage {
                    rx: u64_of(rx_t).unwrap_or(0),
                    tx: u64_of(tx_t).unwrap_or(0),
                },
                seen: Usage {
                    rx: u64_of(rx_s).unwrap_or(0),
                    tx: u64_of(tx_s).unwrap_or(0),
                },
            },
            cap_used: u64_of(cap_used).unwrap_or(0),
            last_handshake: u64_of(hs),
        })
    }
}

/// The interface's private key: read from `<dir>/private.key`, or made with `generate` and
/// written there with mode 0600 on first start.
pub fn load_or_create_key(dir: &Path, generate: impl FnOnce() -> Key) -> Result<Key, StoreError> {
    let path = dir.join("private.key");
    let err = |source| StoreError::Dir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Key::from_base64(text.trim()).map_err(|_| StoreError::Corrupt {
            path: path.clone(),
            what: "the private key (not 32 bytes of base64)".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = generate();
            // Durably: a key lost to a power cut would come back as a new one, and every client
            // config names the old one.
            crate::sys::durable::replace(&path, format!("{}\n", key.to_base64()).as_bytes(), 0o600)
                .map_err(|e| err(e.source))?;
            Ok(key)
        }
        Err(e) => Err(err(e)),
    }
}

mod outbox;
pub use outbox::OutboxRow;

#[cfg(test)]
mod tests;
