//! The programs a shell script runs, from shfmt's syntax tree (`shfmt --tojson`): a real parser,
//! so case patterns, arrays, here-documents and `$(...)` are read the way bash reads them.
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Names bash runs without looking at PATH (and reserved words shfmt keeps as calls).
const BUILTINS: &[&str] = &[
    ".",
    ":",
    "[",
    "[[",
    "alias",
    "break",
    "builtin",
    "cd",
    "continue",
    "declare",
    "echo",
    "eval",
    "exit",
    "export",
    "false",
    "getopts",
    "hash",
    "kill",
    "let",
    "local",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "set",
    "shift",
    "source",
    "test",
    "trap",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unset",
    "wait",
];

/// Functions of tests/vm/lib.sh that run their remaining arguments as a command, and how many
/// arguments (their own name included) come before it.
const WRAPPERS: &[(&str, usize)] = &[
    ("check", 2),
    ("check_not", 2),
    ("require", 2),
    ("wait_for", 2),
];

/// A program a script runs, where it runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    pub program: String,
    pub line: u64,
}

/// Parses `text` with shfmt and returns the programs it runs (not functions it defines itself,
/// nor builtins), each with its line.
pub fn programs(text: &str) -> Result<Vec<Use>, String> {
    let tree = parse(text)?;
    let mut functions = Vec::new();
    collect_functions(&tree, &mut functions);
    let mut calls = Vec::new();
    collect_calls(&tree, &mut calls);
    // serde_json walks object keys in sorted order; report in source order.
    calls.sort_by_key(|(offset, _, _)| *offset);
    let mut out = Vec::new();
    for (_, line, args) in calls {
        for program in called(&args, &functions)? {
            out.push(Use { program, line });
        }
    }
    Ok(out)
}

fn parse(text: &str) -> Result<Value, String> {
    let mut child = Command::new("shfmt")
        .arg("--tojson")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("shfmt: {e} (install the shfmt package)"))?;
    child
        .stdin
        .take()
        .ok_or("shfmt: no stdin")?
        .write_all(text.as_bytes())
        .map_err(|e| format!("shfmt: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("shfmt: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "shfmt: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("shfmt output: {e}"))
}

fn collect_functions(v: &Value, out: &mut Vec<String>) {
    walk(v, &mut |node| {
        if node["Type"] == "FuncDecl"
            && let Some(name) = node["Name"]["Value"].as_str()
        {
            out.push(name.to_string());
        }
    });
}

type Call = (u64, u64, Vec<Option<String>>);

/// Every simple command: its offset, its line and its words (None for a word that is not a
/// literal).
fn collect_calls(v: &Value, out: &mut Vec<Call>) {
    walk(v, &mut |node| {
        if node["Type"] == "CallExpr"
            && let Some(args) = node["Args"].as_array()
        {
            let offset = node["Pos"]["Offset"].as_u64().unwrap_or(0);
            let line = node["Pos"]["Line"].as_u64().unwrap_or(0);
            out.push((offset, line, args.iter().map(literal).collect()));
        }
    });
}

fn walk(v: &Value, f: &mut impl FnMut(&Value)) {
    match v {
        Value::Object(map) => {
            f(v);
            map.values().for_each(|child| walk(child, f));
        }
        Value::Array(items) => items.iter().for_each(|child| walk(child, f)),
        _ => {}
    }
}

/// The text of a word made only of literal parts (plain, 'single' or "double" quoted).
fn literal(word: &Value) -> Option<String> {
    let mut s = String::new();
    for part in word["Parts"].as_array()? {
        match part["Type"].as_str()? {
            "Lit" | "SglQuoted" => s.push_str(part["Value"].as_str()?),
            "DblQuoted" => s.push_str(&literal(part)?),
            _ => return None,
        }
    }
    Some(s)
}

/// The programs one simple command runs: its first word, and what wrappers such as `timeout`,
/// `ip netns exec` or `bash -c` run in turn.
fn called(args: &[Option<String>], functions: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = args;
    while let Some(Some(first)) = rest.first() {
        let name = first.as_str();
        if let Some((_, skip)) = WRAPPERS.iter().find(|(w, _)| *w == name) {
            rest = rest.get(*skip..).unwrap_or_default();
            continue;
        }
        if functions.iter().any(|f| f == name) {
            break;
        }
        match name {
            "exec" | "nohup" | "sudo" | "nice" | "time" => rest = &rest[1..],
            "command" => {
                // `command -v X` asks whether X exists; it runs nothing.
                if matches!(rest.get(1), Some(Some(o)) if o.starts_with("-v") || o.starts_with("-V"))
                {
                    break;
                }
                rest = &rest[1..];
            }
            "env" | "xargs" => rest = skip_options(&rest[1..], |a| a.contains('=')),
            "taskset" => {
                // `taskset -c LIST cmd` or `taskset MASK cmd`.
                let cpu_list =
                    matches!(rest.get(1), Some(Some(o)) if o == "-c" || o == "--cpu-list");
                rest = rest.get(if cpu_list { 3 } else { 2 }..).unwrap_or_default();
            }
            "timeout" => {
                // Options, then the duration, then the command.
                rest = skip_options(&rest[1..], |_| false);
                rest = rest.get(1..).unwrap_or_default();
            }
            _ if BUILTINS.contains(&name) => break,
            // A path: a file the repository ships or builds, not a program from a package.
            _ if name.contains('/') => break,
            _ => {
                out.push(name.to_string());
                if name == "ip" && words(rest, 1..3) == ["netns", "exec"] {
                    rest = rest.get(4..).unwrap_or_default();
                } else if name == "runuser" {
                    let dashes = rest.iter().position(|a| a.as_deref() == Some("--"));
                    rest = dashes.map_or(&[][..], |i| &rest[i + 1..]);
                } else if matches!(name, "bash" | "sh") && words(rest, 1..2) == ["-c"] {
                    if let Some(Some(script)) = rest.get(2) {
                        out.extend(programs(script)?.into_iter().map(|u| u.program));
                    }
                    break;
                } else {
                    break;
                }
            }
        }
    }
    Ok(out)
}

fn skip_options(args: &[Option<String>], also: impl Fn(&str) -> bool) -> &[Option<String>] {
    let n = args
        .iter()
        .take_while(|a| matches!(a, Some(s) if s.starts_with('-') || also(s)))
        .count();
    // `timeout -k 5 10 cmd`: an option's separate value is a number.
    let n = n + args[n..]
        .iter()
        .take_while(|a| n > 0 && matches!(a, Some(s) if s.parse::<f64>().is_ok()))
        .count()
        .saturating_sub(1);
    &args[n..]
}

fn words(args: &[Option<String>], range: std::ops::Range<usize>) -> Vec<&str> {
    args.get(range)
        .unwrap_or_default()
        .iter()
        .map(|a| a.as_deref().unwrap_or(""))
        .collect()
}
