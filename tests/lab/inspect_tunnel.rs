//! A decision on a flow found inside a tunnel reaches the kernel: a peer sends a BitTorrent
//! handshake inside IP-in-IP under a block policy, and its further IP-in-IP packets to that
//! destination are dropped, while its own plain traffic and a second peer's still pass; the
//! same when the flow is named in the clear and carried on inside the tunnel. Needs root:
//! `cargo test -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::harness::INTERNET;
use crate::inspect::setup;
use crate::inspect_hostile::{attacker, bare, protocols};
use common::netns::wait_for;

/// Behind the node: counts the IP-in-IP packets that arrive, and on each `mark N` datagram
/// (UDP 9000) prints `round N ipip=COUNT` and starts counting again. A packet that came before
/// the mark is already queued when the mark is read, so the count is exact without waiting.
const RECEIVER: &str = r#"
import select, socket
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IPIP)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", 9000))
raw.setblocking(False)
count = 0
print("ready", flush=True)
while True:
    ready, _, _ = select.select([raw, udp], [], [])
    if raw in ready:
        try:
            while True:
                raw.recv(65535); count += 1
        except BlockingIOError:
            pass
    if udp in ready:
        mark = udp.recv(100).decode()
        try:
            while True:
                raw.recv(65535); count += 1
        except BlockingIOError:
            pass
        print("round", mark.split()[1], "ipip=%d" % count, flush=True)
        count = 0
"#;

/// `python3 tunnel.py SELF DEST WHAT ROUND`: an inner TCP segment from SELF to DEST:6881, sent
/// three times inside IP-in-IP (`plain`: an ordinary payload from port 41000+ROUND; `bulk`: the
/// same with 1,000 zero bytes, 200 times;
/// `bittorrent`: a handshake from port 40000; `same`: an ordinary payload from port 40000) or
/// once in the clear (`clear`: the handshake from port 40000); then `mark ROUND` as an ordinary
/// UDP datagram to DEST:9000.
const TUNNEL: &str = r#"
import socket, struct, sys
me, dest, what, rnd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
hs = b"\x13BitTorrent protocol" + bytes(8) + b"\x33" * 20 + b"-TT0001-tunnelledtun"
sport, body = {
    "plain": (41000 + int(rnd), b"just some bytes of an ordinary connection"),
    "bittorrent": (40000, hs), "clear": (40000, hs),
    "same": (40000, b"just some bytes of an ordinary connection"),
    "bulk": (41000 + int(rnd), bytes(1000)),
}[what]
seg = struct.pack("!HHIIBBHHH", sport, 6881, 1, 0, 5 << 4, 0x18, 65535, 0, 0) + body
if what == "clear":
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    s.sendto(seg, (dest, 0))
else:
    inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 1, 0, 64, 6, 0,
                        socket.inet_aton(me), socket.inet_aton(dest)) + seg
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IPIP)
    for _ in range(200 if what == "bulk" else 3):
        s.sendto(inner, (dest, 0))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(("mark %s" % rnd).encode(), (dest, 9000))
"#;

/// The flow table as the version before the tunnel sets made it, holding one decision.
const OLD_TABLE: &str = "table inet waylume_flows {}
delete table inet waylume_flows
table inet waylume_flows {
  set block4 { type ipv4_addr . inet_proto . ipv4_addr . inet_service . inet_service; flags timeout; }
  set throttle4 { type ipv4_addr . inet_proto . ipv4_addr . inet_service . inet_service; flags timeout; }
  set rate4 { type ipv4_addr . inet_proto . ipv4_addr . inet_service . inet_service; flags dynamic,timeout; timeout 10m; }
  set block6 { type ipv6_addr . inet_proto . ipv6_addr . inet_service . inet_service; flags timeout; }
  set throttle6 { type ipv6_addr . inet_proto . ipv6_addr . inet_service . inet_service; flags timeout; }
  set rate6 { type ipv6_addr . inet_proto . ipv6_addr . inet_service . inet_service; flags dynamic,timeout; timeout 10m; }
  chain forward {
    type filter hook forward priority -10; policy accept;
    ip saddr . meta l4proto . ip daddr . th sport . th dport @block4 drop
    ip6 saddr . meta l4proto . ip6 daddr . th sport . th dport @block6 drop
  }
}
add element inet waylume_flows block4 { 10.9.9.9 . tcp . 198.19.2.2 . 1234 . 6881 timeout 10m }
";

/// A block policy, a second peer (the one that sends through tunnels) and the receiver.
struct Bench {
    nl: crate::harness::NodeLab,
    d: crate::harness::Daemon<'static>,
    other: serde_json::Value,
    att: String,
    peer: serde_json::Value,
    me: String,
    log: std::path::PathBuf,
}

impl Bench {
    fn new(tag: &str, action: &str) -> Bench {
        let config = format!("[inspection]\npolicy = {{ bittorrent = \"{action}\" }}\n");
        let (mut nl, d, other) = setup(tag, Some(&config));
        let (att, peer) = attacker(&mut nl, &d);
        let me = bare(&peer["address"]);
        let dir = nl.lab.dir.path().to_path_buf();
        std::fs::write(dir.join("receiver.py"), RECEIVER).unwrap();
        std::fs::write(dir.join("tunnel.py"), TUNNEL).unwrap();
        let log = dir.join("receiver.log");
        let receiver = dir.join("receiver.py").display().to_string();
        let net = nl.net.clone();
        nl.lab.spawn(&net, &["python3", &receiver], &[], &log);
        wait_for("the receiver", Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ready")
        });
        Bench {
            nl,
            d,
            other,
            att,
            peer,
            me,
            log,
        }
    }

    /// Sends one round from the tunnelling peer; how many of its IP-in-IP packets arrived.
    fn round(&self, n: u32, what: &str) -> u32 {
        let tunnel = self.nl.lab.dir.path().join("tunnel.py");
        let out = self.nl.lab.exec(
            &self.att,
            &[
                "python3",
                tunnel.to_str().unwrap(),
                &self.me,
                INTERNET,
                what,
                &n.to_string(),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let prefix = format!("round {n} ipip=");
        let mut seen = None;
        wait_for(
            &format!("round {n} at the receiver"),
            Duration::from_secs(10),
            || {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                seen = text
                    .lines()
                    .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_owned));
                seen.is_some()
            },
        );
        seen.unwrap().parse().unwrap()
    }

    fn set(&self, name: &str) -> String {
        let out = self.nl.lab.exec(
            &self.nl.srv,
            &["nft", "list", "set", "inet", "waylume_flows", name],
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Waits for the peer's tunnel to the receiver in the block set, both directions.
    fn tunnel_blocked(&self) {
        self.tunnel_in("tunnel_block4");
    }

    /// Waits for the peer's tunnel to the receiver in `set`, both directions, and only its.
    fn tunnel_in(&self, set: &str) {
        let (me, other) = (&self.me, bare(&self.other["address"]));
        wait_for(
            &format!("the tunnel in {set}"),
            Duration::from_secs(10),
            || {
                self.set(set)
                    .contains(&format!("{me} . ipencap . {INTERNET}"))
            },
        );
        let listed = self.set(set);
        assert!(
            listed.contains(&format!("{INTERNET} . ipencap . {me}")),
            "both directions: {listed}"
        );
        assert!(!listed.contains(&other), "{listed}");
    }

    /// The other peer's ordinary connection passes and names nothing.
    fn other_peer_passes(&self) {
        let client = self.nl.lab.dir.path().join("client.py");
        let out = self.nl.lab.exec(
            &self.nl.cli,
            &["python3", client.to_str().unwrap(), INTERNET, "http"],
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("ok"),
            "the other peer's HTTP: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let o = protocols(&self.d, &self.other);
        assert!(o.get("bittorrent").is_none(), "other peer flagged: {o}");
    }
}

/// Also the upgrade: the node finds the table an earlier version made, without the tunnel
/// sets; it gains them and keeps the decision it held.
#[test]
#[ignore = "needs root"]
fn a_blocked_flow_inside_ip_in_ip_drops_the_peers_tunnel_to_that_destination() {
    let b = Bench::new("u", "block");
    let old = b.nl.lab.dir.path().join("old.nft");
    std::fs::write(&old, OLD_TABLE).unwrap();
    let out =
        b.nl.lab
            .exec(&b.nl.srv, &["nft", "-f", old.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Before any decision the peer's tunnel carries its packets: the receiver sees them.
    assert_eq!(b.round(1, "plain"), 3, "IP-in-IP passes the node at first");

    // The handshake inside the tunnel is named, and the decision reaches the tunnel set.
    b.round(2, "bittorrent");
    wait_for("the tunnelled flow named", Duration::from_secs(10), || {
        protocols(&b.d, &b.peer)["bittorrent"]["flows"].as_u64() >= Some(1)
    });
    b.tunnel_blocked();
    let out = b.nl.lab.exec(
        &b.nl.srv,
        &["nft", "list", "table", "inet", "waylume_flows"],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("10.9.9.9 . tcp . 198.19.2.2 . 1234 . 6881"),
        "the earlier decision kept: {table}"
    );
    assert_eq!(table.matches("@block4 drop").count(), 1, "{table}");

    // Now the same peer's tunnel to that destination is cut; its mark, plain UDP, still
    // arrives, and so does the other peer's ordinary connection.
    assert_eq!(
        b.round(3, "plain"),
        0,
        "IP-in-IP dropped after the decision"
    );
    b.other_peer_passes();
}

/// The flow is named by a handshake in the clear, then carried on inside IP-in-IP with the same
/// inner ports: its tunnelled packets bring the tunnel into the block set.
#[test]
#[ignore = "needs root"]
fn a_flow_named_in_the_clear_and_carried_on_in_a_tunnel_is_cut_there_too() {
    let b = Bench::new("v", "block");
    assert_eq!(b.round(1, "plain"), 3, "IP-in-IP passes the node at first");
    b.round(2, "clear");
    let me = b.me.clone();
    wait_for(
        "the flow in the 5-tuple set",
        Duration::from_secs(10),
        || {
            b.set("block4")
                .contains(&format!("{me} . tcp . {INTERNET} . 40000 . 6881"))
        },
    );
    assert!(!b.set("tunnel_block4").contains(&me), "no tunnel yet");
    // The first tunnelled packets may pass while the decision is written.
    b.round(3, "same");
    b.tunnel_blocked();
    assert_eq!(
        b.round(4, "plain"),
        0,
        "IP-in-IP dropped after the decision"
    );
    b.other_peer_passes();
}

/// Under `throttle`, the tunnel is held to the low rate: of 200 kB sent at once, what passes is
/// what 32 kB/s lets through, while the peer's plain mark and the other peer still pass.
#[test]
#[ignore = "needs root"]
fn a_throttled_flow_inside_ip_in_ip_holds_the_peers_tunnel_to_the_low_rate() {
    let b = Bench::new("w", "throttle");
    // An unthrottled burst loses some packets on the way on a busy machine (138 to 200 of
    // 200 seen here), still far more than the throttle lets through.
    let before = b.round(1, "bulk");
    assert!(before >= 100, "{before} of 200 passed before any decision");
    b.round(2, "bittorrent");
    b.tunnel_in("tunnel_throttle4");
    let passed = b.round(3, "bulk");
    eprintln!("tunnel burst of 200 packets of 1 kB: {before} passed, then {passed} throttled");
    // 32 kB/s with one second of burst: 31 packets of 1,060 bytes on the wire.
    assert!(passed <= 35, "{passed} of 200 packets passed the throttle");
    b.other_peer_passes();
}
