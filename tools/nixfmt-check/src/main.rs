//! `nixfmt-check [--write] FILE...`: report every Nix file that alejandra would change (exit 1),
//! or rewrite them in place with `--write`. A parse error is reported with its file and exits 2.
//! It formats with the alejandra library itself, so the result is what `nix fmt` produces with
//! the flake's `formatter` (pkgs.alejandra) of the same version.

use std::{fs, process::ExitCode};

use alejandra::format::{in_memory, Status};

enum Outcome {
    Formatted,
    NeedsFormatting,
    Error(String),
}

fn check(path: &str, write: bool) -> Outcome {
    let before = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return Outcome::Error(format!("{path}: {e}")),
    };
    match in_memory(path.to_owned(), before) {
        (Status::Error(e), _) => Outcome::Error(format!("{path}: {e}")),
        (Status::Changed(false), _) => Outcome::Formatted,
        (Status::Changed(true), after) if write => match fs::write(path, after) {
            Ok(()) => {
                eprintln!("formatted {path}");
                Outcome::Formatted
            }
            Err(e) => Outcome::Error(format!("{path}: {e}")),
        },
        (Status::Changed(true), _) => Outcome::NeedsFormatting,
    }
}

fn main() -> ExitCode {
    let mut write = false;
    let mut files = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--write" => write = true,
            "-h" | "--help" => {
                eprintln!("usage: nixfmt-check [--write] FILE.nix...");
                return ExitCode::SUCCESS;
            }
            _ => files.push(arg),
        }
    }
    if files.is_empty() {
        eprintln!("nixfmt-check: no files given (usage: nixfmt-check [--write] FILE.nix...)");
        return ExitCode::from(2);
    }
    let (mut unformatted, mut errors) = (0, 0);
    for path in &files {
        match check(path, write) {
            Outcome::Formatted => {}
            Outcome::NeedsFormatting => {
                eprintln!("not formatted: {path}");
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
