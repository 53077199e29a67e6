//! An in-process node: the real API routes and store, with the in-memory WireGuard at the seam.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use warp::http::StatusCode;
use waylume::api::metrics::Metrics;
use waylume::api::{self, Api};
use waylume::config::PeerLifetimes;
use waylume::core::auth;
use waylume::core::clientconf::ServerSide;
use waylume::core::plan::PlanInput;
use waylume::core::registry::Registry;
use waylume::node::{Node, NodeHandle, PeerStatus, Removal, Repairs, Seams};
use waylume::store::Store;
use waylume::sys::fake::{FakeEnforcer, FakeWireGuard};
use waylume::sys::wg::WireGuard;
use wireguard_control::Key;

pub const SECRET: &[u8] = b"7e57c0de7e57c0de7e57c0de7e57c0de7e57c0de7e57c0de7e57c0de7e57c0de";
pub const SERVER_ID: &str = "test-node";

pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub wg: Arc<FakeWireGuard>,
    pub policy: Arc<FakeEnforcer>,
    pub node: NodeHandle,
    pub api: Arc<Api>,
    pub clock: Arc<AtomicU64>,
    nonce: AtomicU64,
}

pub fn server_side() -> ServerSide {
    ServerSide {
        public_key: Key([42; 32]).get_public(),
        endpoint: "192.0.2.1:51820".into(),
        dns: vec!["1.1.1.1".parse().unwrap()],
        mtu: 1420,
        persistent_keepalive: 25,
    }
}

impl TestNode {
    pub fn new(subnet: &str, capacity: u16) -> TestNode {
        TestNode::open(
            tempfile::tempdir().unwrap(),
            Arc::new(FakeWireGuard::default()),
            subnet,
            capacity,
        )
    }

    pub fn open(
        dir: tempfile::TempDir,
        wg: Arc<FakeWireGuard>,
        subnet: &str,
        capacity: u16,
    ) -> TestNode {
        let store = Store::open(dir.path()).unwrap();
        let registry = Registry::new(subnet.parse().unwrap(), None, capacity);
        let lifetimes = PeerLifetimes {
            idle_timeout: None,
            handshake_grace: std::time::Duration::from_secs(600),
        };
        let dyn_wg: Arc<dyn WireGuard> = wg.clone();
        let policy = Arc::new(FakeEnforcer::default());
        let dyn_policy: Arc<dyn waylume::sys::policy::PeerEnforcer> = policy.clone();
        let seams = Seams {
            wg: dyn_wg,
            policy: dyn_policy,
            rules: rules(subnet),
        };
        let mut node = Node::open(registry, store, server_side(), seams, lifetimes).unwrap();
        node.reconcile(false).unwrap();
        let node = node.spawn().unwrap();
        let clock = Arc::new(AtomicU64::new(1_800_000_000));
        let c = clock.clone();
        let api = Arc::new(Api::new(
            node.clone(),
            Arc::new(Metrics::default()),
            capacity,
            Some((SECRET, SERVER_ID)),
            move || c.load(Ordering::SeqCst),
            None,
        ));
        TestNode {
            dir,
            wg,
            policy,
            node,
            api,
            clock,
            nonce: AtomicU64::new(0),
        }
    }

    /// One whole reconcile pass on the node's thread.
    pub async fn reconcile(&self, persist: bool) -> Repairs {
        self.node
            .call(move |n| n.reconcile(persist))
            .await
            .unwrap()
            .unwrap()
    }

    /// Writes every peer's counters to the store, as on exit.
    pub async fn flush(&self) {
        self.node.call(|n| n.flush()).await.unwrap().unwrap();
    }

    pub async fn due_for_removal(&self, now: u64) -> Vec<(waylume::core::peer::PeerId, Removal)> {
        self.node
            .call(move |n| n.due_for_removal(now))
            .await
            .unwrap()
    }

    /// The peers as the node's view shows them, oldest first.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.node.view().list().into_iter().cloned().collect()
    }

    pub fn now(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    pub fn next_nonce(&self) -> String {
        format!("nonce-{:016}", self.nonce.fetch_add(1, Ordering::SeqCst))
    }

    /// A correctly signed request builder.
    pub fn signed(&self, method: &str, path: &str, body: &[u8]) -> warp::test::RequestBuilder {
        self.signed_with(&self.next_nonce(), method, path, body)
    }

    pub fn signed_with(
        &self,
        nonce: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> warp::test::RequestBuilder {
        let ts = self.now();
        let req = auth::Request {
            method,
            path_and_query: path,
            body,
        };
        let sig = auth::sign(SECRET, SERVER_ID, &req, ts, nonce);
        warp::test::request()
            .method(method)
            .path(path)
            .header("content-type", "application/json")
            .header(auth::HEADER_TIMESTAMP, ts.to_string())
            .header(auth::HEADER_NONCE, nonce)
            .header(auth::HEADER_SIGNATURE, sig)
            .body(body)
    }

    pub async fn send(&self, req: warp::test::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.reply(&api::routes(self.api.clone())).await;
        let body: Value = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
        (resp.status(), body)
    }

    /// A signed request whose answer is read as a client must: its signature checked first, then
    /// its sealed secrets opened.
    pub async fn call(&self, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
        let nonce = self.next_nonce();
        let req = self.signed_with(&nonce, method, path, body.as_bytes());
        let resp = req.reply(&api::routes(self.api.clone())).await;
        let sig = resp
            .headers()
            .get(auth::HEADER_SIGNATURE)
            .map(|v| v.to_str().unwrap());
        let status = resp.status();
        waylume::core::answer::verify(SECRET, SERVER_ID, &nonce, status.as_u16(), resp.body(), sig)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let mut body: Value = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
        if let Some(fields) = body.as_object_mut() {
            waylume::core::seal::open_fields(fields, SECRET, SERVER_ID, &nonce).unwrap();
        }
        (status, body)
    }

    pub async fn create(&self, body: &str) -> Value {
        let (status, v) = self.call("POST", "/api/peers", body).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v
    }
}

/// Asserts the error JSON shape and returns its code.
pub fn error_code(v: &Value) -> String {
    let e = &v["error"];
    assert!(e["message"].is_string(), "{v}");
    e["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {v}"))
        .to_string()
}

/// The data plane's rules for `subnet`: the server on its first host, isolation and shaping on.
pub fn rules(subnet: &str) -> PlanInput {
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    PlanInput {
        iface: "wl-test".into(),
        ifb: "ifb-wl-test".into(),
        subnet,
        subnet_v6: None,
        server_addr: subnet.hosts().next().unwrap(),
        outward: None,
        isolate: true,
        blocked_v4: Vec::new(),
        blocked_v6: Vec::new(),
        shaping: true,
        peers: Vec::new(),
    }
}
