//! What can go wrong talking to Supabase, and how to read its answers leniently: PostgREST sends
//! `{code, message, details, hint}`, the Supabase gateway sends `{message, hint}` without a code,
//! and proxies in between send HTML or plain text.
use std::fmt;
use std::time::{Duration, SystemTime};

/// The parts of an error body worth logging. Every field may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// SQLSTATE (`23502`), PostgREST (`PGRST204`) or custom (`PT404`) code.
    pub code: Option<String>,
    pub message: Option<String>,
    pub details: Option<String>,
    pub hint: Option<String>,
}

/// Longest piece of a foreign body quoted in a log line.
const SNIPPET: usize = 160;

impl ErrorBody {
    /// Reads whatever came back. JSON objects give their fields (of any JSON type); anything else
    /// becomes a short message: an HTML page's `<title>`, or the first characters of the text.
    pub fn parse(body: &[u8]) -> ErrorBody {
        let text = String::from_utf8_lossy(body);
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text) {
            let field = |names: &[&str]| {
                names.iter().find_map(|n| match map.get(*n) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => Some(snippet(s)),
                    Some(other) => Some(snippet(&other.to_string())),
                })
            };
            return ErrorBody {
                code: field(&["code", "error_code"]),
                message: field(&["message", "msg", "error_description", "error"]),
                details: field(&["details"]),
                hint: field(&["hint"]),
            };
        }
        let message = html_title(&text)
            .map(snippet)
            .or_else(|| Some(snippet(&text)).filter(|s| !s.is_empty()));
        ErrorBody {
            message,
            ..ErrorBody::default()
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(c) = &self.code {
            parts.push(c.clone());
        }
        parts.push(
            self.message
                .clone()
                .unwrap_or_else(|| "(no message)".into()),
        );
        if let Some(d) = &self.details {
            parts.push(format!("details: {d}"));
        }
        if let Some(h) = &self.hint {
            parts.push(format!("hint: {h}"));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Collapses whitespace and cuts at [`SNIPPET`] characters.
fn snippet(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(SNIPPET) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

fn html_title(text: &str) -> Option<&str> {
    let lower = text.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    Some(text[start..end].trim()).filter(|t| !t.is_empty())
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("supabase.url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// DNS, connect, TLS, reset, or no answer within the timeout.
    #[error("{0}")]
    Network(String),
    #[error("HTTP {status}: {body}")]
    Status {
        status: u16,
        body: ErrorBody,
        retry_after: Option<Duration>,
    },
    /// A 2xx whose body is not what was asked for.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl ControlError {
    /// Network errors, 408, 429 and 5xx may succeed later; other 4xx will not until someone
    /// changes the key, the schema or the node.
    pub fn is_retryable(&self) -> bool {
        match self {
            ControlError::Network(_) => true,
            ControlError::Status { status, .. } => {
                matches!(status, 408 | 429) || (500..=599).contains(status)
            }
            ControlError::Url { .. } | ControlError::Client(_) | ControlError::Unexpected(_) => {
                false
            }
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ControlError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short, stable name for the kind of failure: two failures with the same kind are the same
    /// state, so only a change of kind is logged again.
    pub fn kind(&self) -> String {
        match self {
            ControlError::Url { .. } => "bad url".into(),
            ControlError::Client(_) => "client".into(),
            ControlError::Network(m) if m.contains("timed out") => "timeout".into(),
            ControlError::Network(_) => "unreachable".into(),
            ControlError::Status { status, body, .. } => match &body.code {
                Some(code) => format!("HTTP {status} {code}"),
                None => format!("HTTP {status}"),
            },
            ControlError::Unexpected(_) => "unexpected answer".into(),
        }
    }

    /// The PostgreSQL/PostgREST code, if the answer carried one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ControlError::Status { body, .. } => body.code.as_deref(),
            _ => None,
        }
    }
}

/// `Retry-After` is either delta-seconds or an HTTP-date (RFC 9110 §10.2.3); a date in the past
/// means "now". `now` is an argument so the parse is testable.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgrest_error_fields() {
        let b = ErrorBody::parse(
            br#"{"code":"23502","details":"Failing row contains (x, null).","hint":null,"message":"null value in column \"endpoint\" violates not-null constraint"}"#,
        );
        assert_eq!(b.code.as_deref(), Some("23502"));
        assert_eq!(
            b.details.as_deref(),
            Some("Failing row contains (x, null).")
        );
        assert_eq!(b.hint, None);
        assert!(b.to_string().starts_with("23502; null value in column"));
    }

    #[test]
    fn gateway_error_without_code() {
        let b =
            ErrorBody::parse(br#"{"message":"Invalid API key","hint":"Double check your key"}"#);
        assert_eq!(b.code, None);
        assert_eq!(b.message.as_deref(), Some("Invalid API key"));
        assert_eq!(
            b.to_string(),
            "Invalid API key; hint: Double check your key"
        );
    }

    #[test]
    fn html_and_text_and_odd_json() {
        let html =
            b"<html>\n<head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>";
        assert_eq!(
            ErrorBody::parse(html).message.as_deref(),
            Some("502 Bad Gateway")
        );
        let long = "x ".repeat(500);
        let m = ErrorBody::parse(long.as_bytes())
            .message
            .unwrap_or_default();
        assert!(m.chars().count() <= SNIPPET + 1 && m.ends_with('…'));
        assert_eq!(ErrorBody::parse(b""), ErrorBody::default());
        let numeric = ErrorBody::parse(br#"{"code":42,"msg":"nope"}"#);
        assert_eq!(numeric.code.as_deref(), Some("42"));
        assert_eq!(numeric.message.as_deref(), Some("nope"));
        assert_eq!(ErrorBody::parse(b"[1,2]").message.as_deref(), Some("[1,2]"));
    }

    #[test]
    fn retryable_statuses() {
        let st = |status| ControlError::Status {
            status,
            body: ErrorBody::default(),
            retry_after: None,
        };
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(st(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(!st(s).is_retryable(), "{s}");
        }
        assert!(ControlError::Network("connection refused".into()).is_retryable());
        assert!(!ControlError::Unexpected("not an array".into()).is_retryable());
    }

    #[test]
    fn retry_after_both_formats() {
        let now = httpdate::parse_http_date("Wed, 25 Nov 2026 22:00:00 GMT").unwrap();
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 22:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 21:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }
}
