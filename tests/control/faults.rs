//! Supabase misbehaving: each fault turns the link to failing with one log line, keeps being
//! retried (with backoff, or at the regular interval for errors that retrying cannot fix), and
//! recovers with one more line once the fault clears. The control plane's state stays readable
//! throughout; it runs on its own task and holds nothing the daemon waits on.
// Helpers here are test code too: a failed setup step should panic with its error.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use common::control::harness::{HEARTBEAT, Harness, PATIENCE, Running};
use common::control::rest::Fault;
use common::control::{logcap, wait_for};
use waylume::control::LinkState;

async fn healthy(cp: &Running) {
    let health = cp.health.clone();
    wait_for("a healthy heartbeat", PATIENCE, || {
        let ok = health.get().is_healthy();
        async move { ok }
    })
    .await
    .unwrap();
}

/// Gaps between consecutive heartbeats (PATCHes) that arrived after `since`.
fn heartbeat_gaps(h: &Harness, since: Instant) -> Vec<Duration> {
    let at: Vec<Instant> = h
        .rest
        .seen()
        .iter()
        .filter(|r| r.method == "PATCH" && r.at >= since)
        .map(|r| r.at)
        .collect();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Runs one fault from healthy to failing and back; returns the heartbeat gaps seen during it.
async fn cycle(
    id: &str,
    fault: Fault,
    kind: &str,
    failures: u32,
    retryable: bool,
) -> Vec<Duration> {
    let h = Harness::start(id).await.unwrap();
    let cp = h.spawn().unwrap();
    healthy(&cp).await;
    let start = Instant::now();
    h.rest.set_fault(fault);
    let health = cp.health.clone();
    wait_for("failures to pile up", PATIENCE, || {
        let n = health.get().consecutive_failures;
        async move { n >= failures }
    })
    .await
    .unwrap();
    let now = cp.health.get();
    assert_eq!(
        now.heartbeat,
        LinkState::Failing {
            reason: kind.to_string()
        }
    );
    assert!(!now.is_healthy());
    assert_eq!(now.summary(), format!("failing: {kind}"));
    let gaps = heartbeat_gaps(&h, start);
    let failing = logcap::lines(&format!("{id} heartbeat failing"));
    assert_eq!(failing.len(), 1, "{failing:?}");
    let (level, line) = &failing[0];
    assert_eq!(*level, log::Level::Warn);
    let how = if retryable {
        "retrying with backoff"
    } else {
        "not retryable"
    };
    assert!(line.contains(how), "{line}");
    assert!(
        !line.contains(common::control::rest::SERVICE_KEY),
        "the key leaked: {line}"
    );

    let stale = h.server_row().await.unwrap().unwrap()["last_heartbeat"].clone();
    h.rest.set_fault(Fault::None);
    healthy(&cp).await;
    h.wait_row("a fresh heartbeat", |r| r["last_heartbeat"] != stale)
        .await
        .unwrap();
    let recovered = logcap::lines(&format!("{id} heartbeat recovered"));
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert!(recovered[0].1.contains(kind), "{recovered:?}");
    let after = cp.health.get();
    assert_eq!(after.summary(), "healthy");
    assert_eq!(after.consecutive_failures, 0);
    assert!(after.heartbeat_failures_total >= u64::from(failures));
    assert_eq!(logcap::lines(&format!("{id} heartbeat failing")).len(), 1);
    assert!(logcap::lines(&format!("{id} usage reports failing")).len() <= 1);
    cp.stop().await.unwrap();
    gaps
}

#[tokio::test]
async fn unauthorized_is_not_retried_early() {
    let gaps = cycle("f-401", Fault::Unauthorized, "HTTP 401", 3, false).await;
    // Retrying cannot fix a wrong key: the next try waits for the regular interval.
    assert!(
        gaps.iter()
            .all(|g| *g >= HEARTBEAT - Duration::from_millis(10)),
        "{gaps:?}"
    );
}

#[tokio::test]
async fn server_error_is_retried_with_backoff() {
    let gaps = cycle("f-500", Fault::ServerError, "HTTP 500 XX000", 3, true).await;
    // The first retries come sooner than the regular interval (backoff starts at 40 ms).
    assert!(gaps.iter().any(|g| *g < HEARTBEAT), "{gaps:?}");
}

#[tokio::test]
async fn html_bad_gateway_is_retried() {
    cycle("f-502", Fault::HtmlBadGateway, "HTTP 502", 3, true).await;
    let line = &logcap::lines("f-502 heartbeat failing")[0].1;
    assert!(
        line.contains("502 Bad Gateway") && !line.contains("<html"),
        "{line}"
    );
}

#[tokio::test]
async fn a_stalled_server_times_out() {
    let t = Instant::now();
    cycle("f-stall", Fault::Stall, "timeout", 2, true).await;
    // Two timed-out attempts take at least two request timeouts.
    assert!(t.elapsed() >= 2 * common::control::harness::REQUEST_TIMEOUT);
}

#[tokio::test]
async fn connection_refused_is_retried() {
    cycle("f-refused", Fault::Refuse, "unreachable", 3, true).await;
    let line = &logcap::lines("f-refused heartbeat failing")[0].1;
    assert!(line.to_lowercase().contains("refused"), "{line}");
}

#[tokio::test]
async fn too_many_requests_honours_retry_after_in_seconds() {
    let gaps = cycle("f-429s", Fault::TooMany("1".into()), "HTTP 429", 2, true).await;
    assert!(
        !gaps.is_empty() && gaps.iter().all(|g| *g >= Duration::from_millis(950)),
        "{gaps:?}"
    );
}

#[tokio::test]
async fn too_many_requests_honours_retry_after_as_a_date() {
    let until = Fault::TooManyUntil(Duration::from_secs(2));
    let gaps = cycle("f-429d", until, "HTTP 429", 2, true).await;
    // An HTTP-date has whole seconds, so "2 s from now" means a wait of 1 to 2 s.
    assert!(
        !gaps.is_empty() && gaps.iter().all(|g| *g >= Duration::from_millis(950)),
        "{gaps:?}"
    );
}

#[tokio::test]
async fn an_unexpected_success_body_is_a_failure() {
    // A PATCH answered 200 without the JSON array it asked for cannot tell whether the row exists.
    cycle("f-odd", Fault::OddSuccess, "unexpected answer", 2, false).await;
    let line = &logcap::lines("f-odd heartbeat failing")[0].1;
    assert!(line.contains("Captive portal"), "{line}");
}

#[tokio::test]
async fn each_change_of_failure_is_logged_once() {
    let h = Harness::start("f-change").await.unwrap();
    let cp = h.spawn().unwrap();
    healthy(&cp).await;
    let health = cp.health.clone();
    for fault in [Fault::Unauthorized, Fault::ServerError] {
        let seen = health.get().heartbeat_failures_total;
        h.rest.set_fault(fault);
        wait_for("three more failures", PATIENCE, || {
            let n = health.get().heartbeat_failures_total;
            async move { n >= seen + 3 }
        })
        .await
        .unwrap();
    }
    h.rest.set_fault(Fault::None);
    healthy(&cp).await;
    let failing: Vec<String> = logcap::lines("f-change heartbeat failing")
        .into_iter()
        .map(|l| l.1)
        .collect();
    assert_eq!(failing.len(), 2, "{failing:?}");
    assert!(
        failing[0].contains("HTTP 401") && failing[1].contains("HTTP 500"),
        "{failing:?}"
    );
    assert_eq!(logcap::lines("f-change heartbeat recovered").len(), 1);
    cp.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_answer_is_refused_as_it_streams_in() {
    cycle(
        "f-huge",
        Fault::HugeSuccess(4 << 20),
        "unexpected answer",
        2,
        false,
    )
    .await;
    let line = &logcap::lines("f-huge heartbeat failing")[0].1;
    assert!(line.contains("larger than"), "{line}");
}
