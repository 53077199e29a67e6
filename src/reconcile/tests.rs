use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtOrd};

use super::*;
use crate::sys::dataplane::tests::{captured_input, kernel};
use crate::sys::runner::fake::FakeRunner;

#[test]
fn counts_runs_repairs_and_failures() {
    let broken = Arc::new(AtomicBool::new(false));
    let b = broken.clone();
    let fake = Arc::new(FakeRunner::new(move |c, _| {
        if b.load(AtOrd::Relaxed) && c.argv[0] == "nft" {
            return Err("nft: netlink: Operation not permitted".into());
        }
        kernel(c)
    }));
    let rec = Reconciler::new(Arc::new(Dataplane::new(fake.clone())));
    let input = captured_input();
    assert!(rec.run_once(&input).unwrap().is_empty());
    broken.store(true, AtOrd::Relaxed);
    assert!(rec.run_once(&input).is_err());
    assert!(rec.run_once(&input).is_err());
    broken.store(false, AtOrd::Relaxed);
    let mut changed = input.clone();
    changed.peers[0].upload_kbps = Some(5000);
    // The fake kernel never changes, so the repair is written and then fails to verify.
    assert!(matches!(
        rec.run_once(&changed),
        Err(DataplaneError::Verify(_))
    ));
    assert_eq!(
        rec.stats(),
        ReconcileStats {
            runs: 4,
            repairs: 0,
            failures: 3
        }
    );
    assert_eq!(fake.writes().len(), 1);
}

#[tokio::test]
async fn the_loop_runs_on_demand_and_stops() {
    let fake = Arc::new(FakeRunner::new(|c, _| kernel(c)));
    let rec = Arc::new(Reconciler::new(Arc::new(Dataplane::new(fake))));
    let trigger = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let desired: Arc<DesiredFn> = Arc::new(|| Some(captured_input()));
    let task =
        tokio::spawn(
            rec.clone()
                .run(desired, Duration::from_secs(3600), trigger.clone(), stop_rx),
        );
    // The first tick fires at once; a notification runs it again without waiting an hour.
    let wait_runs = |n: u64| {
        let rec = rec.clone();
        async move {
            while rec.stats().runs < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait_runs(1))
        .await
        .unwrap();
    trigger.notify_one();
    tokio::time::timeout(Duration::from_secs(5), wait_runs(2))
        .await
        .unwrap();
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.stats().repairs, 0);
}
