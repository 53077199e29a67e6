//! The replay floor on disk: the newest request timestamp this node accepted, written durably
//! before the request runs, so that the next process refuses every request the previous one may
//! have seen (its nonce cache dies with it).
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::sys::durable::{self, WriteError};

/// File name under the state directory.
pub const FILE: &str = "api-replay-floor";

#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("{} holds {text:?}, not a timestamp; remove it only if no request can be replayed (e.g. after a minute)", path.display())]
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
    persisted: Mutex<u64>,
}

impl ReplayFloor {
    /// Opens the floor in `dir`; also returns what the previous process left (`None`: nothing).
    pub fn open(dir: &Path) -> Result<(ReplayFloor, Option<u64>), FloorError> {
        let path = dir.join(FILE);
        let prev = match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                text.trim()
                    .parse::<u64>()
                    .map_err(|_| FloorError::Corrupt {
                        path: path.clone(),
                        text: text.chars().take(40).collect(),
                    })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(FloorError::Read { path, source }),
        };
        let floor = ReplayFloor {
            path,
            persisted: Mutex::new(prev.unwrap_or(0)),
        };
        Ok((floor, prev))
    }

    /// Records `ts` unless a later one is already on disk. Blocking (fsync): call it off the
    /// async threads. At most one write per second of request timestamps.
    pub fn record(&self, ts: u64) -> Result<(), FloorError> {
        // Held across the write so that a slower, older write never lands after a newer one.
        let mut persisted = self.persisted.lock().unwrap_or_else(|e| e.into_inner());
        if ts <= *persisted {
            return Ok(());
        }
        durable::replace(&self.path, format!("{ts}\n").as_bytes(), 0o600)?;
        *persisted = ts;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_restart_and_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let (f, prev) = ReplayFloor::open(dir.path()).unwrap();
        assert_eq!(prev, None);
        f.record(100).unwrap();
        f.record(90).unwrap();
        let (_, prev) = ReplayFloor::open(dir.path()).unwrap();
        assert_eq!(prev, Some(100));
    }

    #[test]
    fn a_corrupt_floor_is_an_error_not_a_zero() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "yesterday").unwrap();
        let e = ReplayFloor::open(dir.path()).err().unwrap();
        assert!(e.to_string().contains("yesterday"), "{e}");
    }
}
