//! What scripts/deps.sh installs, and which Debian package really provides a program here.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One entry of a `*_pkgs=(...)` array: `package` or `package:cmd1,cmd2`.
#[derive(Debug, Clone)]
pub struct Entry {
    pub package: String,
    pub commands: Vec<String>,
}

/// Every entry of every `NAME_pkgs=( ... )` array in deps.sh (an array may span lines).
pub fn parse_deps(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut body = line;
        if !inside {
            match line.find("_pkgs=(") {
                Some(i) => body = &line[i + "_pkgs=(".len()..],
                None => continue,
            }
        }
        let (body, closed) = match body.find(')') {
            Some(i) => (&body[..i], true),
            None => (body, false),
        };
        for word in body.split_whitespace() {
            let (package, commands) = word.split_once(':').unwrap_or((word, ""));
            out.push(Entry {
                package: package.to_string(),
                commands: commands
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
            });
        }
        inside = !closed;
    }
    out
}

/// Where a program is found: PATH, then the sbin directories a non-root PATH may lack.
pub fn locate(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// The Debian package that owns `path`, looked up under the names dpkg may know it by: as given,
/// through symlinks (alternatives), and with or without the merged `/usr` prefix.
pub fn owner(path: &Path) -> Option<String> {
    let mut candidates = vec![path.to_path_buf()];
    if let Ok(real) = std::fs::canonicalize(path) {
        candidates.push(real);
    }
    for c in candidates.clone() {
        let s = c.to_string_lossy().into_owned();
        match s.strip_prefix("/usr") {
            Some(short) => candidates.push(PathBuf::from(short)),
            None => candidates.push(PathBuf::from(format!("/usr{s}"))),
        }
    }
    candidates.iter().find_map(|c| {
        let out = Command::new("dpkg").arg("-S").arg(c).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| !l.starts_with("diversion"))?;
        let pkg = line.split(':').next()?.trim();
        (out.status.success() && !pkg.is_empty()).then(|| pkg.to_string())
    })
}

/// Whether every Debian system has `package`: what `debootstrap --variant=minbase` installs,
/// the Essential and priority required packages, and apt.
pub fn in_minimal_debian(package: &str, cache: &mut BTreeMap<String, bool>) -> bool {
    if package == "apt" {
        return true;
    }
    if let Some(&known) = cache.get(package) {
        return known;
    }
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Essential} ${Priority}", package])
        .output();
    let known = out.is_ok_and(|o| {
        let s = String::from_utf8_lossy(&o.stdout);
        o.status.success() && (s.starts_with("yes") || s.ends_with("required"))
    });
    cache.insert(package.to_string(), known);
    known
}

pub fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).ends_with("installed"))
}

/// The applets of the static busybox the VM's initramfs carries (none when it is missing).
pub fn busybox_applets() -> Vec<String> {
    Command::new("busybox")
        .arg("--list")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
