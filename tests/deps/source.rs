//! The programs Rust and Python code runs: `Command::new("X")`, argv arrays whose first element
//! is a literal (`run(&["ip", ...])`, `subprocess.run(["ip", ...])`, `Cmd::new(["nft", ...])`),
//! a tool name passed as the first argument (`self.run("initdb", ...)`), and the script of
//! `"sh", "-c", "..."`.
use crate::shell::{self, Use};

/// Calls whose array is not a program's argv: arguments of an already named program, or of the
/// node's own binary (`d.cli(&["get", id])`, `s.piped(&["list"])`, `s.terminal(&["list"])`).
const NOT_ARGV: &[&str] = &["args", "cli", "piped", "terminal"];

/// The node's own subcommands: tests run them through helpers that put the binary in front.
const OWN_SUBCOMMANDS: &[&str] = &[
    "check-config",
    "completions",
    "inspect",
    "keygen",
    "man",
    "peers",
    "serve",
];

pub fn programs(text: &str) -> Result<Vec<Use>, String> {
    // Comment lines are blanked rather than dropped, so offsets still give line numbers.
    let code: String = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("//") || t.starts_with('#') {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let line_of = |offset: usize| code[..offset].matches('\n').count() as u64 + 1;
    let mut found: Vec<(usize, String)> = Vec::new();
    found.extend(after(&code, "Command::new("));
    found.extend(after(&code, ".run("));
    found.extend(argv_heads(&code));
    for (at, script) in sh_c(&code) {
        for u in shell::programs(&script)? {
            found.push((at, u.program));
        }
    }
    found.sort();
    Ok(found
        .into_iter()
        .filter(|(_, p)| !OWN_SUBCOMMANDS.contains(&p.as_str()))
        .map(|(at, program)| Use {
            program,
            line: line_of(at),
        })
        .collect())
}

/// The string literal right after each occurrence of `prefix`, with its offset.
fn after(text: &str, prefix: &str) -> Vec<(usize, String)> {
    text.match_indices(prefix)
        .filter_map(|(i, _)| Some((i, string_at(&text[i + prefix.len()..])?)))
        .collect()
}

/// `"text"` at the start of `s` (after blanks), for names without escapes.
fn string_at(s: &str) -> Option<String> {
    let s = s.trim_start().strip_prefix('"')?;
    let end = s.find('"')?;
    let lit = &s[..end];
    let is_name = lit.starts_with(|c: char| c.is_ascii_alphanumeric())
        && lit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
    is_name.then(|| lit.to_string())
}

/// First elements of `[ "x", ...` arrays that are an argument: opened right after `(` or `,`.
fn argv_heads(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices('[') {
        let before = text[..i].trim_end();
        let before = before.strip_suffix("vec!").unwrap_or(before).trim_end();
        let borrowed = before.ends_with('&');
        let before = before.strip_suffix('&').unwrap_or(before).trim_end();
        let opener = before.chars().last();
        // After a comma only a borrowed slice counts: `exec(ns, &["ping", ...])` is an argv,
        // `[vec!["check"], vec!["lint"]]` is a list of argument lists.
        if !(opener == Some('(') || (opener == Some(',') && borrowed)) {
            continue;
        }
        let callee: String = before[..before.len() - 1]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        // `json!([...])` and other macros take data, not an argv.
        let macro_call = before[..before.len() - 1].ends_with('!');
        if opener == Some('(') && (macro_call || NOT_ARGV.contains(&callee.as_str())) {
            continue;
        }
        let rest = &text[i + 1..];
        if let Some(lit) = string_at(rest) {
            let after_lit = rest.trim_start()[lit.len() + 2..].trim_start();
            if after_lit.starts_with(',') || after_lit.starts_with(']') {
                out.push((i, lit));
            }
        }
    }
    out
}

/// The script of `"sh", "-c", "..."` or `"sh", "-c", &format!("...")`.
fn sh_c(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for shell in ["\"sh\", \"-c\",", "\"bash\", \"-c\","] {
        for (i, _) in text.match_indices(shell) {
            let rest = text[i + shell.len()..].trim_start();
            let rest = rest.strip_prefix("&format!(").unwrap_or(rest);
            if let Some(s) = rest.strip_prefix('"')
                && let Some(end) = s.find('"')
            {
                out.push((i, s[..end].to_string()));
            }
        }
    }
    out
}
