//! Answers the way PostgREST gives them: the `Prefer` header it honours, and PostgreSQL errors
//! mapped to its status codes and error JSON.
use bytes::Bytes;
use http_body_util::Full;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use serde_json::json;

use super::json;

pub(super) type Resp = Response<Full<Bytes>>;

pub(super) struct Prefer {
    pub resolution: Option<String>,
    pub representation: bool,
    pub applied: Vec<String>,
}

pub(super) fn prefer(parts: &Parts) -> Result<Prefer, Resp> {
    let mut p = Prefer {
        resolution: None,
        representation: false,
        applied: Vec::new(),
    };
    let mut strict = false;
    let mut unknown = false;
    for item in parts
        .headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match item {
            "resolution=merge-duplicates" | "resolution=ignore-duplicates" => {
                p.resolution = Some(item["resolution=".len()..].to_string());
            }
            "return=representation" => p.representation = true,
            "return=minimal" | "missing=default" => {}
            "handling=strict" => strict = true,
            "handling=lenient" => {}
            _ => {
                unknown = true;
                continue;
            }
        }
        p.applied.push(item.to_string());
    }
    if strict && unknown {
        return Err(error(
            400,
            "PGRST122",
            "Invalid preferences given with handling=strict",
            None,
        ));
    }
    Ok(p)
}

/// PostgREST's SQLSTATE → HTTP table (`mapSQLtoHTTP` in PostgREST's `src/PostgREST/Error.hs`).
/// `authed`: the request carried a user's JWT rather than the anon key.
pub fn status_for(code: &str, message: &str, authed: bool) -> u16 {
    let class = code.get(..2).unwrap_or("");
    match code {
        "23503" | "23505" => 409,
        "25006" => 405,
        // pg-safeupdate's refusal is the client's fault; any other cardinality error is not.
        "21000" if message.ends_with("requires a WHERE clause") => 400,
        "21000" => 500,
        "22023" if message.starts_with("role") && message.ends_with("does not exist") => 401,
        "53400" => 500,
        "57P01" => 503,
        "P0001" => 400,
        "42883" if message.starts_with("function xmlagg(") => 406,
        "42883" | "42P01" => 404,
        "42P17" => 500,
        "42501" if authed => 403,
        "42501" => 401,
        _ if class == "PT" => code[2..].parse().unwrap_or(500),
        _ => match class {
            "08" => 503,
            "0L" | "0P" | "28" => 403,
            "09" | "25" | "2D" | "38" | "39" | "3B" | "40" | "54" | "55" | "57" | "58" | "F0"
            | "HV" | "P0" | "XX" => 500,
            "53" => 503,
            _ => 400,
        },
    }
}

pub(super) fn db_error(e: &tokio_postgres::Error, role: &str) -> Resp {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            error(
                status_for(code, db.message(), role == "authenticated"),
                code,
                db.message(),
                Some((db.detail(), db.hint())),
            )
        }
        None => error(503, "PGRST000", &e.to_string(), None),
    }
}

pub(super) fn error(
    status: u16,
    code_: &str,
    message: &str,
    extra: Option<(Option<&str>, Option<&str>)>,
) -> Resp {
    let (details, hint) = extra.unwrap_or((None, None));
    let body = json!({"code": code_, "details": details, "hint": hint, "message": message});
    json(code(status), &body.to_string())
}

pub(super) fn code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
