//! The Edge Function's side of signed and sealed answers (`supabase/functions/_shared/answer.ts`)
//! checks the node's own test vectors under Deno with Web Crypto.
use std::path::Path;

#[test]
#[ignore = "needs Deno: npm ci --prefix examples/edge-functions/connection-request"]
fn the_edge_function_verifies_and_opens_answers_with_the_nodes_vectors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deno = root.join("examples/edge-functions/connection-request/node_modules/.bin/deno");
    let deno_dir = tempfile::tempdir().expect("temporary directory");
    for args in [
        vec!["test", "--no-prompt", "answer_test.ts"],
        vec!["lint", "answer.ts", "answer_test.ts"],
    ] {
        let out = std::process::Command::new(&deno)
            .args(&args)
            .current_dir(root.join("supabase/functions/_shared"))
            .env("DENO_DIR", deno_dir.path())
            .env("DENO_NO_UPDATE_CHECK", "1")
            .env("NO_COLOR", "1")
            .output()
            .expect("deno runs");
        assert!(
            out.status.success(),
            "deno {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
