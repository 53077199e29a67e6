//! How `peers …` shows the node's answer: a table or `key: value` lines on a terminal, the
//! API's JSON document (field names as the API has them) when stdout is not a terminal or with
//! `--json`; a QR code or a 0600 file for a new peer's config; a refusal as one line on stderr.
//!
//! Exit codes: 0 done; 1 the node could not be reached or its answer not read; 2 wrong usage;
//! 3 the node refused the request (its error on stderr); 78 the configuration is invalid.
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{qr, table};

/// The node refused the request.
pub const EXIT_REFUSED: u8 = 3;

/// Which view of an answer a command asks for on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// `GET /api/peers`: one table line per peer.
    List,
    /// One peer as `key: value` lines.
    Peer,
    /// A new peer: its lines, then its wg-quick config (unless it went to a file).
    Created,
    /// Anything else: the JSON document.
    Json,
}

/// What to do with a created peer's config besides printing it.
#[derive(Debug, Default)]
pub struct ConfigSinks {
    pub qr: bool,
    /// Opened (created, mode 0600) before the request, so a bad path changes nothing.
    pub file: Option<(PathBuf, File)>,
}

impl ConfigSinks {
    /// Creates `path` for the config now: mode 0600, never over an existing file or symlink.
    pub fn new(qr: bool, output: Option<&Path>) -> Result<ConfigSinks> {
        let file = match output {
            None => None,
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .with_context(|| format!("--output {}", path.display()))?;
                Some((path.to_path_buf(), f))
            }
        };
        Ok(ConfigSinks { qr, file })
    }

    /// The request failed: the file made for the config goes away again.
    pub fn discard(&mut self) {
        if let Some((path, _)) = self.file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Whether the human view applies: a terminal, and no `--json`.
pub fn human(json: bool) -> bool {
    !json && std::io::stdout().is_terminal()
}

/// Prints the answer and says how the command ends.
pub fn show(
    view: View,
    human: bool,
    status: u16,
    answer: &Value,
    sinks: &mut ConfigSinks,
    now: u64,
) -> Result<ExitCode> {
    if !(200..300).contains(&status) {
        sinks.discard();
        if !human {
            print(&format!("{}\n", serde_json::to_string_pretty(answer)?))?;
        }
        log::error!("{}", refusal(status, answer));
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    if view == View::Created {
        let config = answer["config"].as_str();
        if let Some((path, file)) = &mut sinks.file {
            let config = config.context("the answer has no config to write")?;
            file.write_all(config.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if sinks.qr {
            let config = config.context("the answer has no config for a QR code")?;
            let code = qr::render(config).map_err(anyhow::Error::msg)?;
            print(&format!("{code}\n"))?;
        }
    }
    let text = match (human, view) {
        (false, _) | (true, View::Json) => format!("{}\n", serde_json::to_string_pretty(answer)?),
        (true, View::List) => {
            let peers = answer["peers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            table::table(peers, now)
        }
        (true, View::Peer) => table::details(answer, now),
        (true, View::Created) => created(answer, sinks, now),
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn created(answer: &Value, sinks: &ConfigSinks, now: u64) -> String {
    let mut text = table::details(answer, now);
    match (&sinks.file, sinks.qr, answer["config"].as_str()) {
        (Some((path, _)), _, _) => {
            text.push_str(&format!("config written to {}\n", path.display()))
        }
        // The QR code above is the config; the text again would only scroll it away.
        (None, true, _) => {}
        (None, false, Some(config)) => {
            text.push('\n');
            text.push_str(config);
        }
        (None, false, None) => {}
    }
    text
}

/// One line for a refused request: status, the API's error code and message.
pub fn refusal(status: u16, answer: &Value) -> String {
    let e = &answer["error"];
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    match (e["code"].as_str(), e["message"].as_str()) {
        (Some(code), Some(msg)) => format!("the node answered {status} {code}: {}", one_line(msg)),
        _ => match answer.as_str() {
            Some(body) if !body.trim().is_empty() => {
                let mut s = one_line(body);
                s.truncate(200);
                format!("the node answered {status}: {s}")
            }
            _ => format!("the node answered {status}"),
        },
    }
}

fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_refusal_is_one_line_with_the_api_error() {
        let e = json!({"error": {"code": "not_found", "message": "peer x\nnot found"}});
        assert_eq!(
            refusal(404, &e),
            "the node answered 404 not_found: peer x not found"
        );
        assert_eq!(
            refusal(502, &json!("<html>\nBad gateway</html>")),
            "the node answered 502: <html> Bad gateway</html>"
        );
        assert_eq!(refusal(500, &Value::Null), "the node answered 500");
    }

    #[test]
    fn the_output_file_is_new_and_private_and_goes_away_on_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer.conf");
        let mut sinks = ConfigSinks::new(false, Some(&path)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // An existing file (or a symlink planted there) is never written through.
        assert!(ConfigSinks::new(false, Some(&path)).is_err());
        let refused = json!({"error": {"code": "conflict", "message": "session in use"}});
        let code = show(View::Created, false, 409, &refused, &mut sinks, 0).unwrap();
        assert_eq!(code, ExitCode::from(EXIT_REFUSED));
        assert!(!path.exists());
    }
}
