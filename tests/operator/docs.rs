//! What the operator reads: shell completions and the manual page generated from the command
//! line definitions. None of these needs root or a node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_waylume-server");

fn node(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn completions_cover_every_subcommand_and_bash_parses_its_script() {
    for shell in ["bash", "zsh", "fish"] {
        let text = stdout(&node(&["completions", shell]));
        for word in [
            "peers",
            "check-config",
            "keygen",
            "inspect",
            "speed-limit",
            "json",
        ] {
            assert!(text.contains(word), "{shell} completion lacks {word}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("waylume-server.bash");
    std::fs::write(&script, stdout(&node(&["completions", "bash"]))).unwrap();
    let parsed = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(parsed.status.success(), "{parsed:?}");

    let bad = node(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stdout.is_empty());
}

#[test]
fn the_manual_page_is_roff_naming_the_subcommands() {
    let text = stdout(&node(&["man"]));
    assert!(text.contains(".TH waylume-server 1"), "{text}");
    assert!(text.contains(".SH SUBCOMMANDS"), "{text}");
    for word in ["peers", "check\\-config", "completions"] {
        assert!(text.contains(word), "man page lacks {word}");
    }
}
