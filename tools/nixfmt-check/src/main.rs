//! `nixfmt-check [--write] [PATH...]`: report every Nix file that alejandra would change (exit 1),
//! or rewrite them in place with `--write`. A directory stands for the `.nix` files below it
//! (hidden directories, `target` and `result` skipped); no path means the current directory.
//! Unreadable or unparsable files are reported and exit 2.
//!
//! The flake's `formatter` runs this same program with `--write`, so `nix fmt` and the check
//! in CI format with one alejandra library version and cannot disagree.

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::ExitCode,
};

use alejandra::format::{in_memory, Status};

enum Outcome {
    Formatted,
    NeedsFormatting,
    Error(String),
}

fn check(path: &Path, write: bool) -> Outcome {
    let shown = path.display().to_string();
    let before = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return Outcome::Error(format!("{shown}: {e}")),
    };
    match in_memory(shown.clone(), before) {
        (Status::Error(e), _) => Outcome::Error(format!("{shown}: {e}")),
        (Status::Changed(false), _) => Outcome::Formatted,
        (Status::Changed(true), after) if write => match fs::write(path, after) {
            Ok(()) => {
                eprintln!("formatted {shown}");
                Outcome::Formatted
            }
            Err(e) => Outcome::Error(format!("{shown}: {e}")),
        },
        (Status::Changed(true), _) => Outcome::NeedsFormatting,
    }
}

/// Every `.nix` file at or below `path`, in a stable order.
fn nix_files(path: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    if !path.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries = fs::read_dir(path)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let child = entry.path();
        if child.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "result") {
                nix_files(&child, out)?;
            }
        } else if name.ends_with(".nix") {
            out.push(child);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut write = false;
    let mut paths = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--write" => write = true,
            "-h" | "--help" => {
                eprintln!("usage: nixfmt-check [--write] [PATH...]");
                return ExitCode::SUCCESS;
            }
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    if paths.is_empty() {
        paths.push(PathBuf::from("."));
    }
    let mut files = Vec::new();
    for path in &paths {
        if let Err(e) = nix_files(path, &mut files) {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    let (mut unformatted, mut errors) = (0, 0);
    for path in &files {
        match check(path, write) {
            Outcome::Formatted => {}
            Outcome::NeedsFormatting => {
                eprintln!("not formatted: {}", path.display());
                unformatted += 1;
            }
            Outcome::Error(e) => {
                eprintln!("error: {e}");
                errors += 1;
            }
        }
    }
    eprintln!(
        "nixfmt-check: {} file(s), {unformatted} not formatted, {errors} error(s)",
        files.len()
    );
    match (errors, unformatted) {
        (0, 0) => ExitCode::SUCCESS,
        (0, _) => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}
