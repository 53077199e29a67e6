//! `/metrics` as Prometheus reads it: Debian's `prometheus` scrapes a lab node (inside the
//! node's namespace, on 127.0.0.1 only) and its HTTP API returns the node's series;
//! `promtool check metrics` passes on the exposition; the example alert rules and Grafana
//! dashboard use only series the node exports, and the rules pass `promtool check rules` and
//! their unit tests. Needs root and the prometheus package: `cargo test -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::NodeLab;
use common::netns::{sh, wait_for};
use serde_json::Value;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

/// `argv` (a promtool command) with `stdin`, run in examples/prometheus; its success and its
/// output.
fn promtool(argv: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(Path::new(EXAMPLES).join("prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A query against the lab's Prometheus, run inside the node's namespace.
fn api(nl: &NodeLab, path: &str, query: Option<&str>) -> Value {
    let url = format!("http://127.0.0.1:19090{path}");
    let mut argv = vec!["curl", "-sf", "-G", url.as_str()];
    let q;
    if let Some(query) = query {
        q = format!("query={query}");
        argv.extend(["--data-urlencode", q.as_str()]);
    }
    let out = nl.lab.exec(&nl.srv, &argv);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Names of the series an expression file uses: every `waylume_...` identifier.
fn series_in(text: &str) -> BTreeSet<String> {
    text.match_indices("waylume_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
#[ignore = "needs promtool (Debian package prometheus)"]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let (ok, out) = promtool(&["promtool", "check", "rules", "alerts.yml"], "");
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["promtool", "test", "rules", "alerts.test.yml"], "");
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["promtool", "check", "config", "prometheus.yml"], "");
    assert!(ok, "{out}");
    // A broken exposition is refused: the check below means something.
    let (ok, _) = promtool(
        &["promtool", "check", "metrics"],
        "# TYPE x counter\nx{a=\"1\" 2\n",
    );
    assert!(!ok);
}

#[test]
#[ignore = "needs root and prometheus"]
fn prometheus_scrapes_the_node_and_finds_every_series_the_examples_use() {
    let mut nl = NodeLab::new("pm");
    // The fleet database is a closed loopback port in the node's namespace: the control plane
    // runs and fails, so its series are there too.
    let d = nl.daemon(&[
        ("WAYLUME_METRICS_PER_PEER", "true"),
        ("SUPABASE_URL", "http://127.0.0.1:9"),
        ("SUPABASE_KEY", "lab-key"),
        ("WAYLUME_HEARTBEAT_INTERVAL_SECS", "1"),
    ]);
    let (pid, _n) = d.start(&mut nl.lab, "d");
    let (ok, peer) = d.cli(&["create", "--session-id", "prom"]);
    assert!(ok, "{peer}");
    let peer_id = peer["peer_id"].as_str().unwrap().to_string();

    let m = nl
        .lab
        .exec(&nl.srv, &["curl", "-sf", "http://127.0.0.1:3000/metrics"]);
    let exposition = String::from_utf8(m.stdout).unwrap();
    let (ok, out) = promtool(&["promtool", "check", "metrics"], &exposition);
    assert!(ok, "promtool check metrics:\n{out}\n{exposition}");

    let dir = nl.lab.dir.path();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{EXAMPLES}/prometheus/alerts.yml]\n\
             scrape_configs:\n  - job_name: waylume\n    static_configs: \
             [{{targets: ['127.0.0.1:3000']}}]\n"
        ),
    )
    .unwrap();
    let data = dir.join("tsdb");
    let cfg_arg = format!("--config.file={}", config.display());
    let data_arg = format!("--storage.tsdb.path={}", data.display());
    nl.lab.spawn(
        &nl.srv,
        &[
            "prometheus",
            &cfg_arg,
            &data_arg,
            "--web.listen-address=127.0.0.1:19090",
        ],
        &[],
        &dir.join("prometheus.log"),
    );
    wait_for(
        "Prometheus to scrape the node",
        Duration::from_secs(60),
        || {
            api(&nl, "/api/v1/query", Some("up{job=\"waylume\"}"))["data"]["result"][0]["value"][1]
                == "1"
        },
    );
    wait_for("the control plane series", Duration::from_secs(30), || {
        api(
            &nl,
            "/api/v1/query",
            Some("waylume_heartbeat_failures_total > 0"),
        )["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    });
    let value = |q: &str| {
        api(&nl, "/api/v1/query", Some(q))["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(value("waylume_peers").as_deref(), Some("1"));
    assert_eq!(value("waylume_dataplane_up").as_deref(), Some("1"));
    assert_eq!(value("waylume_control_plane_up").as_deref(), Some("0"));
    let per_peer = format!("waylume_peer_receive_bytes_total{{peer_id=\"{peer_id}\"}}");
    assert_eq!(value(&per_peer).as_deref(), Some("0"));

    // Every series the examples use is one Prometheus found on the node.
    let mut used =
        series_in(&std::fs::read_to_string(format!("{EXAMPLES}/prometheus/alerts.yml")).unwrap());
    used.extend(series_in(
        &std::fs::read_to_string(format!("{EXAMPLES}/grafana/waylume-nodes.json")).unwrap(),
    ));
    assert!(used.len() > 10, "{used:?}");
    let names = api(&nl, "/api/v1/label/__name__/values", None)["data"].clone();
    let missing: Vec<&String> = used
        .iter()
        .filter(|u| !names.as_array().unwrap().iter().any(|n| n == u.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "not scraped: {missing:?}\nscraped: {names}"
    );

    // The rules load and evaluate without error against the real series.
    wait_for(
        "the alert rules to evaluate",
        Duration::from_secs(30),
        || {
            let rules = api(&nl, "/api/v1/rules", None);
            let all: Vec<&Value> = rules["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            all.len() == 5 && all.iter().all(|r| r["health"] == "ok")
        },
    );
    sh(&["kill", "-TERM", &pid.to_string()]);
    assert_eq!(nl.lab.wait_exit(pid, Duration::from_secs(20)), Some(0));
}
