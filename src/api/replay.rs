//! The replay floor on disk: the newest request timestamp this node accepted and the nonces it
//! accepted with it, written durably before the request runs, so that the next process refuses
//! every request the previous one may have seen (its nonce cache dies with it) and still takes
//! fresh requests stamped in that same second.
//!
//! Format: the timestamp on the first line, then one nonce per line, or `*` for "more than
//! [`MAX_NONCES`]: refuse the whole second". A new second replaces the file (durably); another
//! nonce in the same second is appended and synced, one fsync per request. A last line cut short
//! by a crash was never synced, so its request never ran: it is ignored.
use std::io::Write as _;
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
    current: Mutex<Current>,
}

struct Current {
    floor: Floor,
    /// The file opened for appends to the current second.
    file: Option<std::fs::File>,
}

fn parse(text: &str) -> Option<Floor> {
    let mut lines = text.lines();
    let ts = lines.next()?.trim().parse().ok()?;
    let mut floor = Floor {
        ts,
        ..Floor::default()
    };
    let rest: Vec<&str> = lines.collect();
    for (i, l) in rest.iter().enumerate() {
        let torn_tail = i + 1 == rest.len() && !text.ends_with('\n');
        if *l == "*" {
            floor.all = true;
        } else if crate::core::auth::valid_nonce(l) && !torn_tail {
            floor.nonces.insert(l.to_string());
        } else if !torn_tail {
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
            current: Mutex::new(Current {
                floor: prev.clone().unwrap_or_default(),
                file: None,
            }),
        };
        Ok((floor, prev))
    }

    /// Records an accepted request. Blocking (fsync): call it off the async threads.
    pub fn record(&self, ts: u64, nonce: &str) -> Result<(), FloorError> {
        // Held across the write so that an older state never lands after a newer one.
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let f = &cur.floor;
        if ts < f.ts || (ts == f.ts && (f.all || f.nonces.contains(nonce))) {
            return Ok(());
        }
        if ts == f.ts && f.nonces.len() < MAX_NONCES && cur.file.is_some() {
            let line = format!("{nonce}\n");
            let appended = cur.file.as_mut().map(|file| {
                file.write_all(line.as_bytes())
                    .and_then(|()| file.sync_data())
            });
            match appended {
                Some(Ok(())) => {
                    cur.floor.nonces.insert(nonce.to_string());
                    return Ok(());
                }
                // Start the file afresh below.
                _ => cur.file = None,
            }
        }
        let next = if ts > cur.floor.ts {
            Floor {
                ts,
                nonces: [nonce.to_string()].into(),
                all: false,
            }
        } else {
            let mut f = cur.floor.clone();
            if f.nonces.len() >= MAX_NONCES {
                f.nonces.clear();
                f.all = true;
            } else {
                f.nonces.insert(nonce.to_string());
            }
            f
        };
        durable::replace(&self.path, render(&next).as_bytes(), 0o600)?;
        cur.file = if next.all {
            None
        } else {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&self.path)
                .ok()
        };
        cur.floor = next;
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
    fn a_line_cut_short_by_a_crash_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), format!("100\n{A}\nnonce-bb")).unwrap();
        let (_, prev) = ReplayFloor::open(dir.path()).unwrap();
        assert_eq!(prev.unwrap().nonces, [A.to_string()].into());
    }

    #[test]
    fn a_corrupt_floor_is_an_error_not_a_zero() {
        let dir = tempfile::tempdir().unwrap();
        for junk in [
            "yesterday",
            "100\nnot a nonce!\n",
            "100\nbad line\nnonce-aaaaaaaaaaaa\n",
        ] {
            std::fs::write(dir.path().join(FILE), junk).unwrap();
            let e = ReplayFloor::open(dir.path()).err().unwrap();
            assert!(e.to_string().contains("not a replay floor"), "{e}");
        }
    }
}
