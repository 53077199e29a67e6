//! Request → SQL, the way PostgREST (v12+) builds it, and PostgreSQL errors → PostgREST's status
//! codes and error JSON. Each request is one transaction under `SET LOCAL ROLE <key's role>`, so
//! grants and row level security apply as they do on Supabase.
use hyper::Method;
use hyper::http::request::Parts;
use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;

use super::json;
use super::reply::{Prefer, Resp, code, db_error, error, prefer};

/// Query parameters that are not filters.
const RESERVED: &[&str] = &[
    "select",
    "order",
    "limit",
    "offset",
    "on_conflict",
    "columns",
];

pub(super) async fn dispatch(
    db: &tokio::sync::Mutex<tokio_postgres::Client>,
    role: &str,
    parts: &Parts,
    query: &[(String, String)],
    body: &[u8],
) -> Resp {
    let Some(table) = parts.uri.path().strip_prefix("/rest/v1/") else {
        return error(
            404,
            "PGRST125",
            "Invalid path specified in request URL",
            None,
        );
    };
    let prefer = match prefer(parts) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Some(function) = table.strip_prefix("rpc/") {
        return rpc(db, role, function, body).await;
    }
    // An empty array is a valid bulk body: nothing to write.
    if parts.method == Method::POST
        && matches!(serde_json::from_slice(body), Ok(Value::Array(a)) if a.is_empty())
    {
        let status = if prefer.resolution.is_some() {
            200
        } else {
            201
        };
        return if prefer.representation {
            json(code(status), "[]")
        } else {
            super::plain(code(status), "text/plain", "")
        };
    }
    let mut client = db.lock().await;
    let tx = match client.transaction().await {
        Ok(tx) => tx,
        Err(e) => return db_error(&e, role),
    };
    let cols = match columns(&tx, table).await {
        Ok(c) if c.is_empty() => {
            let msg = format!("Could not find the table 'public.{table}' in the schema cache");
            return error(404, "PGRST205", &msg, None);
        }
        Ok(c) => c,
        Err(e) => return db_error(&e, role),
    };
    if let Err(e) = tx.batch_execute(&format!("SET LOCAL ROLE {role}")).await {
        return db_error(&e, role);
    }
    let built = match build(&parts.method, table, &cols, query, &prefer, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let params: Vec<&(dyn ToSql + Sync)> = built
        .params
        .iter()
        .map(|p| p as &(dyn ToSql + Sync))
        .collect();
    let rows = match tx.query(&built.sql, &params).await {
        Ok(rows) => rows,
        Err(e) => return db_error(&e, role),
    };
    if let Err(e) = tx.commit().await {
        return db_error(&e, role);
    }
    let inserted = rows.iter().any(|r| built.flagged && r.get::<_, bool>(0));
    let objects: Vec<Value> = rows
        .iter()
        .filter_map(|r| serde_json::from_str(r.get::<_, &str>(usize::from(built.flagged))).ok())
        .map(|v| project(v, query))
        .collect();
    let status = match parts.method {
        Method::GET => 200,
        Method::POST if prefer.resolution.is_some() && !inserted => 200,
        Method::POST => 201,
        _ if prefer.representation => 200,
        _ => 204,
    };
    let mut resp = if prefer.representation || parts.method == Method::GET {
        json(code(status), &Value::Array(objects).to_string())
    } else {
        super::plain(code(status), "text/plain", "")
    };
    if let Ok(v) = prefer.applied.join(", ").parse() {
        resp.headers_mut().insert("preference-applied", v);
    }
    resp
}

struct Built {
    sql: String,
    params: Vec<String>,
    /// The first column is the "was inserted" flag of an upsert.
    flagged: bool,
}

fn build(
    method: &Method,
    table: &str,
    cols: &[(String, String)],
    query: &[(String, String)],
    prefer: &Prefer,
    body: &[u8],
) -> Result<Built, Resp> {
    let t = format!("\"public\".{}", ident(table));
    let mut params = Vec::new();
    let filters = filters(cols, query, &mut params)?;
    let row = "to_jsonb(pgrst_t.*)::text";
    let sql = match *method {
        Method::GET => format!("SELECT {row} FROM {t} AS pgrst_t{}", where_(&filters)),
        Method::DELETE if filters.is_empty() => {
            return Err(error(400, "21000", "DELETE requires a WHERE clause", None));
        }
        Method::DELETE => format!(
            "DELETE FROM {t} AS pgrst_t{} RETURNING {row}",
            where_(&filters)
        ),
        Method::PATCH if filters.is_empty() => {
            return Err(error(400, "21000", "UPDATE requires a WHERE clause", None));
        }
        Method::PATCH => {
            let obj = match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(o)) => o,
                _ => return Err(error(400, "PGRST102", "Empty or invalid json", None)),
            };
            let keys = known_keys(&obj, table, cols)?;
            let set: Vec<String> = keys
                .iter()
                .map(|k| format!("{0} = pgrst_body.{0}", ident(k)))
                .collect();
            params.push(Value::Object(obj).to_string());
            format!(
                "UPDATE {t} AS pgrst_t SET {} FROM (SELECT * FROM json_populate_record(NULL::{t}, ${}::text::json)) AS pgrst_body{} RETURNING {row}",
                set.join(", "),
                params.len(),
                where_(&filters)
            )
        }
        Method::POST => {
            let rows = match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(o)) => vec![o],
                Ok(Value::Array(a)) => a
                    .into_iter()
                    .map(|v| match v {
                        Value::Object(o) => Ok(o),
                        _ => Err(error(400, "PGRST102", "Empty or invalid json", None)),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(error(400, "PGRST102", "Empty or invalid json", None)),
            };
            let Some(first) = rows.first() else {
                return Err(error(400, "PGRST102", "Empty or invalid json", None));
            };
            let keys = known_keys(first, table, cols)?;
            if rows
                .iter()
                .any(|r| r.len() != keys.len() || keys.iter().any(|k| !r.contains_key(k)))
            {
                return Err(error(400, "PGRST102", "All object keys must match", None));
            }
            let list = keys.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
            let target = query
                .iter()
                .find(|(k, _)| k == "on_conflict")
                .map(|(_, v)| {
                    v.split(',')
                        .map(|c| ident(c.trim()))
                        .collect::<Vec<_>>()
                        .join(", ")
                });
            let conflict = match (prefer.resolution.as_deref(), target) {
                (Some("merge-duplicates"), Some(target)) => {
                    let set: Vec<String> = keys
                        .iter()
                        .map(|k| format!("{0} = EXCLUDED.{0}", ident(k)))
                        .collect();
                    format!(" ON CONFLICT ({target}) DO UPDATE SET {}", set.join(", "))
                }
                (Some(_), Some(target)) => {
                    format!(" ON CONFLICT ({target}) DO NOTHING")
                }
                // Without on_conflict PostgREST uses the primary key; every table here names it.
                (Some(_), None) => {
                    return Err(error(
                        400,
                        "42P10",
                        "on_conflict is required by this test server",
                        None,
                    ));
                }
                (None, _) => String::new(),
            };
            params.push(Value::Array(rows.into_iter().map(Value::Object).collect()).to_string());
            let sql = format!(
                "INSERT INTO {t} AS pgrst_t ({list}) SELECT {list} FROM json_populate_recordset(NULL::{t}, ${}::text::json) AS pgrst_body{conflict} RETURNING (pgrst_t.xmax = 0), {row}",
                params.len()
            );
            return Ok(Built {
                sql,
                params,
                flagged: true,
            });
        }
        _ => return Err(error(405, "PGRST117", "Unsupported HTTP method", None)),
    };
    Ok(Built {
        sql,
        params,
        flagged: false,
    })
}

/// `col=op.value` → SQL conditions; values travel as text parameters cast to the column's type.
fn filters(
    cols: &[(String, String)],
    query: &[(String, String)],
    params: &mut Vec<String>,
) -> Result<Vec<String>, Resp> {
    let mut out = Vec::new();
    for (col, expr) in query
        .iter()
        .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
    {
        let Some((_, ty)) = cols.iter().find(|(c, _)| c == col) else {
            return Err(error(
                400,
                "42703",
                &format!("column pgrst_t.{col} does not exist"),
                None,
            ));
        };
        let bad = || {
            error(
                400,
                "PGRST100",
                &format!("failed to parse filter ({expr})"),
                None,
            )
        };
        let (op, value) = expr.split_once('.').ok_or_else(bad)?;
        let sql_op = match op {
            "eq" => "=",
            "neq" => "<>",
            "gt" => ">",
            "gte" => ">=",
            "lt" => "<",
            "lte" => "<=",
            "like" => "LIKE",
            "ilike" => "ILIKE",
            "is" => {
                let v = match value {
                    "null" => "NULL",
                    "true" => "TRUE",
                    "false" => "FALSE",
                    _ => return Err(bad()),
                };
                out.push(format!("pgrst_t.{} IS {v}", ident(col)));
                continue;
            }
            _ => return Err(bad()),
        };
        params.push(value.replace('*', if op.ends_with("like") { "%" } else { "*" }));
        out.push(format!(
            "pgrst_t.{} {sql_op} ${}::text::{ty}",
            ident(col),
            params.len()
        ));
    }
    Ok(out)
}

fn where_(filters: &[String]) -> String {
    if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    }
}

fn known_keys(
    obj: &Map<String, Value>,
    table: &str,
    cols: &[(String, String)],
) -> Result<Vec<String>, Resp> {
    obj.keys()
        .map(|k| {
            if cols.iter().any(|(c, _)| c == k) {
                Ok(k.clone())
            } else {
                let msg =
                    format!("Could not find the '{k}' column of '{table}' in the schema cache");
                Err(error(400, "PGRST204", &msg, None))
            }
        })
        .collect()
}

/// `select=a,b` keeps those keys; `*` or no `select` keeps all.
fn project(v: Value, query: &[(String, String)]) -> Value {
    let Some((_, sel)) = query.iter().find(|(k, _)| k == "select") else {
        return v;
    };
    match v {
        Value::Object(o) if sel != "*" => {
            let keep: Vec<&str> = sel.split(',').map(str::trim).collect();
            Value::Object(
                o.into_iter()
                    .filter(|(k, _)| keep.contains(&k.as_str()))
                    .collect(),
            )
        }
        other => other,
    }
}

async fn columns(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relname = $1 AND c.relkind IN ('r', 'v', 'p')
                AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&table],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `POST /rpc/<function>` with named arguments, each cast to its declared parameter type.
async fn rpc(
    db: &tokio::sync::Mutex<tokio_postgres::Client>,
    role: &str,
    function: &str,
    body: &[u8],
) -> Resp {
    let args = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => o,
        _ => return error(400, "PGRST102", "Empty or invalid json", None),
    };
    let mut client = db.lock().await;
    let tx = match client.transaction().await {
        Ok(tx) => tx,
        Err(e) => return db_error(&e, role),
    };
    let found = tx
        .query_opt(
            "SELECT coalesce(p.proargnames, '{}')::text[],
                    array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t)
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'public' AND p.proname = $1",
            &[&function],
        )
        .await;
    let (names, types): (Vec<String>, Vec<String>) = match found {
        Ok(Some(r)) => (r.get(0), r.get(1)),
        Ok(None) => {
            let msg = format!("Could not find the function public.{function} in the schema cache");
            return error(404, "PGRST202", &msg, None);
        }
        Err(e) => return db_error(&e, role),
    };
    if args.keys().any(|k| !names.contains(k)) {
        let msg = format!("Could not find the function public.{function} in the schema cache");
        return error(404, "PGRST202", &msg, None);
    }
    let mut params = Vec::new();
    let mut list = Vec::new();
    for (name, ty) in names.iter().zip(&types) {
        if let Some(v) = args.get(name) {
            params.push(match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            list.push(format!("{} => ${}::text::{ty}", ident(name), params.len()));
        }
    }
    if let Err(e) = tx.batch_execute(&format!("SET LOCAL ROLE {role}")).await {
        return db_error(&e, role);
    }
    let sql = format!(
        "SELECT to_jsonb(\"public\".{}({}))::text",
        ident(function),
        list.join(", ")
    );
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let row = match tx.query_one(&sql, &refs).await {
        Ok(r) => r,
        Err(e) => return db_error(&e, role),
    };
    if let Err(e) = tx.commit().await {
        return db_error(&e, role);
    }
    match row.get::<_, Option<String>>(0) {
        Some(v) => json(code(200), &v),
        None => super::plain(code(204), "text/plain", ""),
    }
}
