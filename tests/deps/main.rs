//! Every program the scripts, tests, benches and src/sys run is installed by scripts/deps.sh or
//! is part of every Debian system (a minbase debootstrap), so the README's two commands work on
//! a fresh Debian 12 with only a Rust toolchain added. Adding a call to a new program without
//! naming its package in deps.sh fails here.
//!
//! Needs shfmt (to parse shell) and dpkg (to find which package a program comes from): a
//! Debian host, as scripts/test.sh provides.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod packages;
mod shell;
mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use packages::Entry;

/// Programs that come from the toolchain the README asks for, from this repository, that
/// scripts/check-nix.sh installs itself with cargo, or that run only where systemd (which
/// brings them) runs.
const PROVIDED: &[&str] = &["cargo", "waylume-server", "deadnix", "systemctl"];

/// Scripts that run inside the test VM, where busybox provides what the initramfs lacks.
const IN_VM: &[&str] = &[
    "tests/vm/init.sh",
    "tests/vm/lib.sh",
    "tests/vm/smoke.sh",
    "tests/vm/e2e.sh",
];

/// Programs run from a package's own directory rather than PATH.
const OFF_PATH: &[(&str, &str)] = &[
    ("initdb", "postgresql"),
    ("pg_ctl", "postgresql"),
    ("postgres", "postgresql"),
];

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The files whose programs must be installable: (path, is shell).
fn sources() -> Vec<(PathBuf, bool)> {
    let mut out = Vec::new();
    let root = Path::new(ROOT);
    for dir in ["scripts", "tests/vm", ".ci"] {
        for f in files(&root.join(dir)) {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let shell = f.extension().is_some_and(|e| e == "sh")
                || text.starts_with("#!/bin/bash")
                || text.starts_with("#!/usr/bin/env bash");
            let python = f.extension().is_some_and(|e| e == "py");
            if shell || python {
                out.push((f, shell));
            }
        }
    }
    for dir in ["tests", "benches", "src/sys"] {
        out.extend(
            files(&root.join(dir))
                .into_iter()
                .filter(|f| f.extension().is_some_and(|e| e == "rs"))
                .map(|f| (f, false)),
        );
    }
    out
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            // The checker's own fixtures name programs on purpose.
            if !path.ends_with("deps") && !path.ends_with("fixtures") {
                out.extend(files(&path));
            }
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Each program used, with the places that use it.
fn uses(files: &[(PathBuf, bool)]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, is_shell) in files {
        let text = std::fs::read_to_string(path).unwrap();
        let found = if *is_shell {
            shell::programs(&text)
        } else {
            source::programs(&text)
        };
        let rel = path
            .strip_prefix(ROOT)
            .unwrap_or(path)
            .display()
            .to_string();
        for u in found.unwrap_or_else(|e| panic!("{rel}: {e}")) {
            out.entry(u.program)
                .or_default()
                .push(format!("{rel}:{}", u.line));
        }
    }
    out
}

/// One line per program that a fresh Debian would not have after deps.sh.
fn problems(used: &BTreeMap<String, Vec<String>>, deps: &[Entry]) -> Vec<String> {
    let mut minimal = BTreeMap::new();
    let busybox = packages::busybox_applets();
    let listed = |p: &str| deps.iter().any(|e| e.package == p);
    let mut out = Vec::new();
    for (program, places) in used {
        let at = places.first().map(String::as_str).unwrap_or("?");
        if PROVIDED.contains(&program.as_str()) {
            continue;
        }
        if let Some((_, pkg)) = OFF_PATH.iter().find(|(p, _)| p == program) {
            if !listed(pkg) {
                out.push(format!("{program} ({at}): package {pkg} is not in deps.sh"));
            }
            continue;
        }
        if places
            .iter()
            .all(|p| IN_VM.iter().any(|f| p.starts_with(f)))
            && busybox.iter().any(|a| a == program)
        {
            continue;
        }
        let mapped = deps.iter().find(|e| e.commands.contains(program));
        let here = packages::locate(program).and_then(|p| packages::owner(&p));
        match (mapped, here) {
            // A mapped program may come from elsewhere (npm with a newer Node.js) as long as the
            // named package is not installed too: then deps.sh would install the wrong one.
            (Some(e), Some(real))
                if real != e.package
                    && packages::installed(&e.package)
                    && !brings(&e.package, &real) =>
            {
                out.push(format!(
                    "{program} ({at}): deps.sh names {} but here it comes from {real}",
                    e.package
                ))
            }
            (Some(_), _) => {}
            (None, Some(real)) if listed(&real) => {}
            (None, Some(real)) if packages::in_minimal_debian(&real, &mut minimal) => {}
            (None, Some(real)) => out.push(format!(
                "{program} ({at}): comes from {real}, which deps.sh does not install"
            )),
            (None, None) => out.push(format!(
                "{program} ({at}): not installed here and not named in deps.sh"
            )),
        }
    }
    out
}

/// Whether `package` brings `real` with it: it depends on it (`gcc` brings `cc` through
/// `gcc-12`), or `real` provides it (NodeSource's `nodejs` provides `npm`).
fn brings(package: &str, real: &str) -> bool {
    let field = |pkg: &str, name: &str| {
        std::process::Command::new("dpkg-query")
            .args(["-W", "-f", &format!("${{{name}}}"), pkg])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let names = |list: String, want: &str| {
        list.split([',', '|'])
            .any(|d| d.split_whitespace().next() == Some(want))
    };
    names(field(package, "Depends"), real) || names(field(real, "Provides"), package)
}

fn deps() -> Vec<Entry> {
    packages::parse_deps(&std::fs::read_to_string(Path::new(ROOT).join("scripts/deps.sh")).unwrap())
}

#[test]
#[ignore = "needs shfmt and dpkg (a Debian host; scripts/test.sh runs it)"]
fn every_program_run_is_installed_by_deps_sh() {
    let used = uses(&sources());
    // The audit must see the programs it is about, or it proves nothing.
    for known in [
        "ip",
        "nft",
        "tc",
        "wg",
        "jq",
        "qemu-system-x86_64",
        "iperf3",
        "curl",
    ] {
        assert!(
            used.contains_key(known),
            "{known} not found by the scan: {used:?}"
        );
    }
    let problems = problems(&used, &deps());
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
#[ignore = "needs shfmt and dpkg (a Debian host; scripts/test.sh runs it)"]
fn an_unmapped_program_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("new.sh");
    std::fs::write(
        &script,
        "#!/bin/bash\nset -e\nls /\nwaylume-frobnicate --now\n",
    )
    .unwrap();
    let rust = dir.path().join("new.rs");
    std::fs::write(&rust, "fn f() { run(&[\"socat-nonexistent\", \"-\"]); }\n").unwrap();
    let used = uses(&[(script, true), (rust, false)]);
    let found = problems(&used, &deps());
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("socat-nonexistent"), "{found:?}");
    assert!(found[1].contains("waylume-frobnicate (") && found[1].contains("new.sh:4"));
    // A program from a package deps.sh does not list is reported even when it is installed.
    let used = BTreeMap::from([("shfmt".to_string(), vec!["x.sh:1".to_string()])]);
    let without: Vec<Entry> = deps()
        .into_iter()
        .filter(|e| e.package != "shfmt")
        .collect();
    let found = problems(&used, &without);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("comes from shfmt"), "{found:?}");
}

#[test]
#[ignore = "needs shfmt (scripts/test.sh installs it)"]
fn the_shell_scan_reads_commands_the_way_bash_does() {
    let text = r#"
need=(qemu-system-x86 cpio)
case "$1" in smoke | all) echo x ;; esac
command -v jq >/dev/null || apt-get install jq
timeout --kill-after=10 "$T" qemu-system-x86_64 -kernel k
x=$(grep -o foo file | sort -u)
ip netns exec ns wg show
check "desc" nft list ruleset
bash -c 'iperf3 -c host'
helper() { cut -f1; }
helper
cat <<EOF
not-a-command here
EOF
"#;
    let got: Vec<String> = shell::programs(text)
        .unwrap()
        .into_iter()
        .map(|u| u.program)
        .collect();
    assert_eq!(
        got,
        [
            "apt-get",
            "qemu-system-x86_64",
            "grep",
            "sort",
            "ip",
            "wg",
            "nft",
            "bash",
            "iperf3",
            "cut",
            "cat"
        ],
    );
}
