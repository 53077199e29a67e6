#!/usr/bin/env python3
"""The node at 10 and at 10,000 peers, side by side, against a real daemon.

For each size it starts `waylume-server serve` in a private network namespace with the userspace
backend (wireguard-go) and the full data plane (isolation, fence, shaping, caps), signs requests
itself, fills the node with peers that each have a speed limit, a data cap and an IPv6 address,
then measures:
  create      POST /api/peers, `--samples` in a row (the node holds N to N + samples peers),
              after two reconcile intervals at N
  delete      POST /api/peers/delete of those peers, in a row: each reads every peer's counters
              from WireGuard (it has no per-peer read), off the node's thread
  create after a delete
              create/delete pairs, only the create timed: it runs while the userspace WireGuard
              is still busy with the delete's read
  list        GET /api/peers?limit=100 (one page)
  metrics     GET /metrics
  restart     SIGTERM, then a new process from exec to READY=1 (sd_notify, read from a socket
              this script owns), with every peer restored
  reboot      the same with no kernel state left (links, nftables tables, wireguard-go gone):
              every peer's WireGuard entry, quota, map entries, classes and filters made anew
  expiry      every peer expiring in the same second: from that second until none is left
              (a node reconciling every second; the others use the default, 5 s)
Prints a table with the ratio of each figure (10,000 / 10); `--markdown` prints it as the README's
performance table. Run as root:
  scripts/bench-api.py [--binary target/release/waylume-server] [--samples 200] [--sizes 10,10000]
                       [--plain] [--markdown]
Everything it makes (namespaces, processes, state) is removed at the end.
"""
import argparse, hashlib, hmac, http.client, json, math, os, shutil, signal, socket, subprocess, sys
import queue, tempfile, threading, time, uuid

SECRET = "6d1f0c2b9a8e4f7d3c5b1a0e9f8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"
SERVER_ID = "bench"
# Every peer uses the whole data plane: a speed limit (an HTB class per direction, found by
# its IPv4 and IPv6 filters) and a data cap (a quota).
PEER = {"speed_limit": {"download_kbps": 20000, "upload_kbps": 10000}, "data_cap_bytes": 10**12}
# `--plain`: peers with neither (and no IPv6 prefix), the data plane's isolation only.
PLAIN = {}


def signed(conn, method, path, body=None):
    text = b"" if body is None else json.dumps(body).encode()
    ts, nonce = str(int(time.time())), uuid.uuid4().hex
    lines = ["waylume-v1", SERVER_ID, method, path, ts, nonce, hashlib.sha256(text).hexdigest()]
    sig = hmac.new(SECRET.encode(), "\n".join(lines).encode(), hashlib.sha256).hexdigest()
    headers = {"content-type": "application/json", "x-waylume-timestamp": ts,
               "x-waylume-nonce": nonce, "x-waylume-signature": "v1=" + sig}
    conn.request(method, path, body=text if body is not None else None, headers=headers)
    r = conn.getresponse()
    data = r.read()
    try:
        return r.status, json.loads(data) if data else None
    except ValueError:
        return r.status, data


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def connect(deadline_s=120):
    deadline = time.time() + deadline_s
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", 3000, timeout=120)
        try:
            if signed(conn, "GET", "/health")[0] in (200, 503):
                return conn
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def timed(n, f):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return pct(times, 0.5), pct(times, 0.99)


def peers_left(conn):
    st, h = signed(conn, "GET", "/health")
    return h["capacity"]["peers"]


def client(a):
    """Runs inside the namespace: one command per line on stdin, one JSON answer per line."""
    conn = None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["do"] == "connect":
            conn = connect()
            out = {}
        elif cmd["do"] == "fill":
            until = cmd.get("expire_at")
            for _ in range(cmd["n"]):
                # Rounded up: the node counts from its whole second, so all land on `until`.
                body = dict(a.peer)
                if until is not None:
                    body["expires_in_secs"] = max(1, math.ceil(until - time.time()))
                st, p = signed(conn, "POST", "/api/peers", body)
                assert st == 201, (st, p)
            out = {}
        elif cmd["do"] == "measure":
            n = cmd["samples"]
            made = []

            def create():
                st, p = signed(conn, "POST", "/api/peers", a.peer)
                assert st == 201, (st, p)
                create.last = p["peer_id"]

            # Creates in a row, then the same peers deleted in a row: the node is at N to N +
            # samples peers throughout. Then pairs, each create right after a delete.
            times, deletes, paired = [], [], []
            for _ in range(n):
                t = time.perf_counter()
                create()
                times.append(time.perf_counter() - t)
                made.append(create.last)
            for peer in made:
                t = time.perf_counter()
                st, _ = signed(conn, "POST", "/api/peers/delete", {"peer_id": peer})
                deletes.append(time.perf_counter() - t)
                assert st == 200, st
            for _ in range(n):
                t = time.perf_counter()
                create()
                paired.append(time.perf_counter() - t)
                st, _ = signed(conn, "POST", "/api/peers/delete", {"peer_id": create.last})
                assert st == 200, st
            out = {"create": (pct(times, 0.5), pct(times, 0.99)),
                   "delete": (pct(deletes, 0.5), pct(deletes, 0.99)),
                   "paired": (pct(paired, 0.5), pct(paired, 0.99))}

            def page():
                st, _ = signed(conn, "GET", "/api/peers?limit=100")
                assert st == 200, st

            def metrics():
                st, _ = signed(conn, "GET", "/metrics")
                assert st == 200, st

            out["list"] = timed(n, page)
            out["metrics"] = timed(n, metrics)
        elif cmd["do"] == "count":
            out = {"peers": peers_left(conn)}
        elif cmd["do"] == "drain":
            # Polls until no peer is left; answers when that happened (wall clock).
            while peers_left(conn) > 0:
                time.sleep(0.02)
            out = {"at": time.time()}
        print(json.dumps(out), flush=True)


class Node:
    """One daemon in its own namespace, and the client half of this script inside it."""

    def __init__(self, a, tag, interval=5):
        self.a = a
        self.interval = interval
        self.ns = "wlbench%d%s" % (os.getpid(), tag)
        self.work = tempfile.mkdtemp(prefix="wl-bench-")
        self.ifname = "wlb%d%s" % (os.getpid() % 10000, tag)
        self.proc = None
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        self.notify_path = os.path.join(self.work, "notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        # Read all the time: the daemon's watchdog and status messages must never fill the
        # socket (a full socket blocks the sender); READY=1 is handed over with its arrival time.
        self.ready = queue.Queue()
        threading.Thread(target=self.listen, daemon=True).start()
        argv = [sys.executable, __file__, "--client"] + (["--plain"] if a.plain else [])
        self.cli = subprocess.Popen(["ip", "netns", "exec", self.ns] + argv,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def listen(self):
        while True:
            try:
                msg = self.notify.recv(4096).decode()
            except OSError:
                return
            if "READY=1" in msg.split("\n"):
                self.ready.put(time.perf_counter())

    def ask(self, **cmd):
        self.cli.stdin.write(json.dumps(cmd) + "\n")
        self.cli.stdin.flush()
        line = self.cli.stdout.readline()
        if not line:
            raise RuntimeError("client failed; daemon log:\n" + self.log())
        return json.loads(line)

    def log(self):
        try:
            return open(os.path.join(self.work, "daemon.log")).read()[-4000:]
        except OSError:
            return ""

    def start(self):
        """Starts the daemon; returns seconds from exec to READY=1."""
        env = dict(os.environ, SERVER_ID=SERVER_ID, WAYLUME_API_SECRET=SECRET, WAYLUME_API_BIND="127.0.0.1",
                   WAYLUME_INTERFACE=self.ifname, WAYLUME_WG_BACKEND="userspace", MAX_CAPACITY="32767",
                   WAYLUME_STATE_DIR=os.path.join(self.work, "state"), WAYLUME_ENDPOINT="192.0.2.1:51820",
                   WAYLUME_RECONCILE_INTERVAL_SECS=str(self.interval), WAYLUME_LOG=os.environ.get("WAYLUME_LOG", "warn"), NOTIFY_SOCKET=self.notify_path)
        if not self.a.plain:
            env["WAYLUME_SUBNET_V6"] = "fd10:77::/64"
        log = open(os.path.join(self.work, "daemon.log"), "a")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, self.a.binary, "serve"], env=env,
                                     stdout=log, stderr=log)
        try:
            return self.ready.get(timeout=300) - t0
        except queue.Empty:
            raise RuntimeError("no READY; daemon log:\n" + self.log())

    def wipe(self):
        """What a reboot leaves of the kernel state: nothing. Every link but lo, both nftables
        tables and wireguard-go go; the stored peers stay."""
        ns = ["ip", "netns", "exec", self.ns]
        for pid in subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True).stdout.split():
            if int(pid) != self.cli.pid:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        links = subprocess.run(ns + ["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        for line in links.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name != "lo":
                subprocess.run(ns + ["ip", "link", "del", name], capture_output=True)
        for table in ("waylume", "waylume_flows"):
            subprocess.run(ns + ["nft", "delete", "table", "inet", table], capture_output=True)
        try:
            os.unlink("/run/wireguard/%s.sock" % self.ifname)
        except FileNotFoundError:
            pass

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)
            self.proc = None

    def close(self):
        try:
            self.cli.stdin.close()
            self.cli.wait(timeout=10)
        except Exception:
            self.cli.kill()
        try:
            self.stop()
        finally:
            # wireguard-go outlives the daemon (the data plane stays up on exit): every process
            # left in the namespace goes, one that is already exiting is no error.
            for pid in subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", self.ns])
            self.notify.close()
            shutil.rmtree(self.work, ignore_errors=True)
            try:
                os.unlink("/run/wireguard/%s.sock" % self.ifname)
            except FileNotFoundError:
                pass


def say(*what):
    print(time.strftime("%H:%M:%S"), *what, file=sys.stderr, flush=True)


def measure(a, size, tag):
    r = {}
    node = Node(a, tag)
    try:
        node.start()
        node.ask(do="connect")
        t = time.perf_counter()
        say("%d peers: filling" % size)
        node.ask(do="fill", n=size)
        fill_rate = size / (time.perf_counter() - t)
        # A node at N peers, not one still digesting a burst of N creates: two reconcile
        # passes run first (they make classes ahead for the next addresses, see the README).
        time.sleep(2 * node.interval + 1)
        node.ask(do="connect")
        say("%d peers: create, list, metrics" % size)
        m = node.ask(do="measure", samples=a.samples)
        r.update(m)
        say("%d peers: restarts" % size)
        restarts = []
        for _ in range(a.restarts):
            node.stop()
            restarts.append(node.start())
            node.ask(do="connect")
        r["restart"] = sorted(restarts)[len(restarts) // 2]
        say("%d peers: restart after a reboot" % size)
        node.stop()
        node.wipe()
        r["cold"] = node.start()
        node.ask(do="connect")
        back = node.ask(do="count")["peers"]
        ns = ["ip", "netns", "exec", node.ns]
        wg = subprocess.run(ns + ["wg", "show", node.ifname, "peers"], capture_output=True, text=True).stdout.split()
        classes = subprocess.run(ns + ["tc", "class", "show", "dev", node.ifname], capture_output=True, text=True).stdout
        shaped = classes.count("parent 1:1")
        assert back == size == len(wg) and (a.plain or shaped >= size), (
            "after the reboot: %d peers, %d in WireGuard, %d classes of %d" % (back, len(wg), shaped, size))
    finally:
        node.close()
    # A node whose peers all expire in the same second: filled at the rate measured above,
    # with room to spare, then timed from that second until the last one is gone.
    # Reconcile every second here, so the figure is the removal, not the wait for a pass.
    node = Node(a, tag + "x", interval=1)
    try:
        node.start()
        node.ask(do="connect")
        expire_at = int(time.time() + 30 + 4 * size / fill_rate) + 1
        say("%d peers: filling, all to expire at %d" % (size, expire_at))
        node.ask(do="fill", n=size, expire_at=expire_at)
        assert time.time() < expire_at, "filled too slowly for the chosen expiry"
        done = node.ask(do="drain")["at"]
        r["expiry"] = done - expire_at
    finally:
        node.close()
    return r


ROWS = [
    ("create p50", "create", 0, "ms"), ("create p99", "create", 1, "ms"),
    ("delete p50", "delete", 0, "ms"), ("delete p99", "delete", 1, "ms"),
    ("create p50, after a delete", "paired", 0, "ms"), ("create p99, after a delete", "paired", 1, "ms"),
    ("list p50 (100 of N)", "list", 0, "ms"), ("list p99 (100 of N)", "list", 1, "ms"),
    ("metrics p50", "metrics", 0, "ms"), ("metrics p99", "metrics", 1, "ms"),
    ("restart to READY", "restart", None, "s"),
    ("READY after a reboot", "cold", None, "s"), ("all N expire together", "expiry", None, "s"),
]


def value(r, key, i, unit):
    v = r[key] if i is None else r[key][i]
    return v * 1e3 if unit == "ms" else v


def report(results, markdown):
    lo, hi = sorted(results)[0], sorted(results)[-1]
    if markdown:
        print("| figure | %d peers | %d peers | ratio |" % (lo, hi))
        print("|---|---:|---:|---:|")
    else:
        print("%-24s %12s %12s %8s" % ("figure", "%d peers" % lo, "%d peers" % hi, "ratio"))
    for name, key, i, unit in ROWS:
        a, b = value(results[lo], key, i, unit), value(results[hi], key, i, unit)
        ratio = b / a if a > 0 else float("inf")
        fmt = "%.2f %s"
        if markdown:
            print("| %s | %s | %s | %.2f |" % (name, fmt % (a, unit), fmt % (b, unit), ratio))
        else:
            print("%-24s %12s %12s %8.2f" % (name, fmt % (a, unit), fmt % (b, unit), ratio))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/waylume-server")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--sizes", default="10,10000")
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--plain", action="store_true",
                    help="peers without speed limit, data cap or IPv6 address")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.peer = PLAIN if a.plain else PEER
    if a.client:
        return client(a)
    results = {}
    for i, size in enumerate(int(s) for s in a.sizes.split(",")):
        results[size] = measure(a, size, chr(ord("a") + i))
        print("measured %d peers: %s" % (size, json.dumps(results[size])), file=sys.stderr, flush=True)
    report(results, a.markdown)


if __name__ == "__main__":
    main()
