use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use super::*;
use crate::sys::fake::FakeWireGuard;
use crate::sys::wg::PeerSpec;

/// A device whose reads wait for the test to let them finish, and are counted.
#[derive(Default)]
struct Gated {
    inner: FakeWireGuard,
    reads: AtomicU64,
    hold: AtomicBool,
}

impl WireGuard for Gated {
    fn ensure_interface(&self) -> Result<bool, WgError> {
        self.inner.ensure_interface()
    }
    fn set_identity(&self) -> Result<(), WgError> {
        Ok(())
    }
    fn upsert_peer(&self, peer: &PeerSpec) -> Result<(), WgError> {
        self.inner.upsert_peer(peer)
    }
    fn remove_peer(&self, key: &Key) -> Result<(), WgError> {
        self.inner.remove_peer(key)
    }
    fn device(&self) -> Result<DeviceView, WgError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        while self.hold.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        self.inner.device()
    }
    fn teardown(&self) -> Result<(), WgError> {
        Ok(())
    }
    fn backend_name(&self) -> &'static str {
        "fake"
    }
}

fn wait(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited too long: {what}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_finished_read_is_not_handed_to_a_later_caller() {
    let r = DeviceReader::new(Arc::new(FakeWireGuard::default()));
    let a = r.read().unwrap();
    let b = r.read().unwrap();
    assert!(b.seq > a.seq, "{} then {}", a.seq, b.seq);
}

#[test]
fn callers_that_asked_during_a_read_share_the_next_one() {
    let wg = Arc::new(Gated::default());
    wg.hold.store(true, Ordering::SeqCst);
    let r = Arc::new(DeviceReader::new(wg.clone()));
    let (tx, rx) = mpsc::channel();
    let ask = |r: &Arc<DeviceReader>| {
        let (r, tx) = (r.clone(), tx.clone());
        std::thread::spawn(move || tx.send(r.read().unwrap().seq).unwrap())
    };
    // The first caller is inside its read; three more ask meanwhile.
    let first = ask(&r);
    wait("the first read", || wg.reads.load(Ordering::SeqCst) == 1);
    let later: Vec<_> = (0..3).map(|_| ask(&r)).collect();
    wait("three waiting callers", || {
        r.waiting.load(Ordering::SeqCst) == 3
    });
    wg.hold.store(false, Ordering::SeqCst);
    first.join().unwrap();
    for c in later {
        c.join().unwrap();
    }
    let mut seqs: Vec<u64> = rx.try_iter().collect();
    seqs.sort();
    // The first read began before the others asked, so they cannot use it: one more read,
    // shared by all three.
    assert_eq!(seqs, vec![1, 2, 2, 2]);
    assert_eq!(wg.reads.load(Ordering::SeqCst), 2);
}
