//! The replay floor on disk: the newest request timestamp this node accepted and the nonces it
//! accepted with it, written durably before the request runs, so that the next process refuses
//! every request the previous one may have seen (its nonce cache dies with it) and still takes
//! fresh requests stamped in that same second.
//!
//! Format: the timestamp on the first line, then one nonce per line, or `*` for "more than
//! [`MAX_NONCES`]: refuse the whole second".
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::core::auth::Floor;
use crate::sys::durable::{self, WriteError};

/// File name under the state directory.
pub const FILE: &str = "api-replay-floor";
/// Nonces listed for the newest second; past this the whole second is refused after a restart.
pub const MAX_NONCES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("{} holds {text:?}, not a replay floor; remove it only if no request can be replayed (a minute after the node stopped)", path.display())]
    Corrupt { path: PathBuf, text: String },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
}

pub struct ReplayFloor {
    path: PathBuf,
    current: Mutex<Floor>,
}

fn parse(text: &str) -> Option<Floor> {
    let mut lines = text.lines();
    let ts = lines.next()?.trim().parse().ok()?;
    let mut floor = Floor {
        ts,
        ..Floor::default()
    };
    for l in lines.map(str::trim).filter(|l| !l.is_empty()) {
        if l == "*" {
            floor.all = true;
        } else if crate::core::auth::valid_nonce(l) {
            floor.nonces.insert(l.to_string());
        } else {
            return None;
        }
    }
    Some(floor)
}

fn render(f: &Floor) -> String {
    let mut out = format!("{}\n", f.ts);
    if f.all {
        out.push_str("*\n");
    } else {
        for n in &f.nonces {
            out.push_str(n);
            out.push('\n');
        }
    }
    out
}

impl ReplayFloor {
    /// Opens the floor in `dir`; also returns what the previous process left (`None`: nothing).
    pub fn open(dir: &Path) -> Result<(ReplayFloor, Option<Floor>), FloorError> {
        let path = dir.join(FILE);
        let prev = match std::fs::read_to_string(&path) {
            Ok(text) => Some(parse(&text).ok_or_else(|| FloorError::Corrupt {
                path: path.clone(),
                text: text.chars().take(40).collect(),
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(FloorError::Read { path, source }),
        };
        let floor = ReplayFloor {
            path,
            current: Mutex::new(prev.clone().unwrap_or_default()),
        };
        Ok((floor, prev))
    }

    /// Records an accepted request. Blocking (fsync): call it off the async threads. Writes
    /// only when the request is in the newest second seen.
    pub fn record(&self, ts: u64, nonce: &str) -> Result<(), FloorError> {
        // Held across the write so that an older state never lands after a newer one.
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let next = if ts > cur.ts {
            Floor {
                ts,
                nonces: [nonce.to_string()].into(),
                all: false,
            }
        } else if ts == cur.ts && !cur.all && !cur.nonces.contains(nonce) {
            let mut f = cur.clone();
            if f.nonces.len() >= MAX_NONCES {
                f.nonces.clear();
                f.all = true;
            } else {
                f.nonces.insert(nonce.to_string());
            }
            f
        } else {
            return Ok(());
        };
        durable::replace(&self.path, render(&next).as_bytes(), 0o600)?;
        *cur = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "nonce-aaaaaaaaaaaa";
    const B: &str = "nonce-bbbbbbbbbbbb";

    #[test]
    fn survives_a_restart_and_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let (f, prev) = ReplayFloor::open(dir.path()).unwrap();
        assert_eq!(prev, None);
        f.record(100, A).unwrap();
        f.record(100, B).unwrap();
        f.record(90, "nonce-older-000000").unwrap();
        let (f, prev) = ReplayFloor::open(dir.path()).unwrap();
        let prev = prev.unwrap();
        assert_eq!((prev.ts, prev.nonces.len(), prev.all), (100, 2, false));
        f.record(101, A).unwrap();
        let (_, prev) = ReplayFloor::open(dir.path()).unwrap();
        assert_eq!(prev.unwrap().nonces, [A.to_string()].into());
    }

    #[test]
    fn a_crowded_second_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (f, _) = ReplayFloor::open(dir.path()).unwrap();
        for i in 0..=MAX_NONCES {
            f.record(7, &format!("nonce-{i:012}")).unwrap();
        }
        let (_, prev) = ReplayFloor::open(dir.path()).unwrap();
        let prev = prev.unwrap();
        assert!(prev.all);
        assert!(prev.nonces.is_empty());
    }

    #[test]
    fn a_corrupt_floor_is_an_error_not_a_zero() {
        let dir = tempfile::tempdir().unwrap();
        for junk in ["yesterday", "100\nnot a nonce!\n"] {
            std::fs::write(dir.path().join(FILE), junk).unwrap();
            let e = ReplayFloor::open(dir.path()).err().unwrap();
            assert!(e.to_string().contains("not a replay floor"), "{e}");
        }
    }
}
