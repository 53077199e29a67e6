#!/usr/bin/env python3
"""Create-peer API latency at 10 and at 10,000 existing peers, against a real daemon.

Starts `waylume-server serve` in a private network namespace with the userspace backend
(wireguard-go), signs requests itself, fills the node to each size, then times creates (each
followed by an untimed delete, so the size stays put). Prints p50/p99 for both sizes and the
ratios. Run as root: scripts/bench-api.py [--binary target/release/waylume-server] [--samples 200]
Everything it makes (namespace, processes, state) is removed at the end.
"""
import argparse, hashlib, hmac, http.client, json, os, shutil, signal, socket, subprocess, sys
import tempfile, time, uuid

SECRET = "bench-secret-0123456789abcdef"
SERVER_ID = "bench"


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
    return r.status, json.loads(data) if data else None


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def client(a):
    conn = http.client.HTTPConnection("127.0.0.1", 3000, timeout=60)
    deadline = time.time() + 30
    while True:
        try:
            if signed(conn, "GET", "/api/peers")[0] == 200:
                break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
            conn = http.client.HTTPConnection("127.0.0.1", 3000, timeout=60)
    count, results = 0, {}
    for size in [int(s) for s in a.sizes.split(",")]:
        while count < size:
            st, _ = signed(conn, "POST", "/api/peers", {})
            assert st == 201, st
            count += 1
        times = []
        for _ in range(a.samples):
            t = time.perf_counter()
            st, peer = signed(conn, "POST", "/api/peers", {})
            times.append(time.perf_counter() - t)
            assert st == 201, (st, peer)
            st, _ = signed(conn, "POST", "/api/peers/delete", {"peer_id": peer["peer_id"]})
            assert st == 200, st
        results[size] = (pct(times, 0.5), pct(times, 0.99))
        print("create at %6d peers: p50 %.2f ms  p99 %.2f ms" % (size, results[size][0] * 1e3, results[size][1] * 1e3),
              flush=True)
    sizes = sorted(results)
    lo, hi = results[sizes[0]], results[sizes[-1]]
    print("ratio %d/%d peers: p50 %.2f  p99 %.2f" % (sizes[-1], sizes[0], hi[0] / lo[0], hi[1] / lo[1]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/waylume-server")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--sizes", default="10,10000")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.client:
        return client(a)
    ns = "wlbench%d" % os.getpid()
    work = tempfile.mkdtemp(prefix="wl-bench-")
    ifname = "wlb%d" % (os.getpid() % 100000)
    proc = None
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        env = dict(os.environ, SERVER_ID=SERVER_ID, WAYLUME_API_SECRET=SECRET, WAYLUME_API_BIND="127.0.0.1",
                   WAYLUME_INTERFACE=ifname, WAYLUME_WG_BACKEND="userspace", MAX_CAPACITY="32767",
                   WAYLUME_STATE_DIR=os.path.join(work, "state"), WAYLUME_ENDPOINT="192.0.2.1:51820",
                   WAYLUME_LOG="warn")
        log = open(os.path.join(work, "daemon.log"), "w")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, a.binary, "serve"], env=env, stdout=log, stderr=log)
        # The API listens on the namespace's loopback: the client half runs inside it.
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, "--client",
                              "--samples", str(a.samples), "--sizes", a.sizes])
        if out.returncode != 0:
            print(open(os.path.join(work, "daemon.log")).read(), file=sys.stderr)
            sys.exit(out.returncode)
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", ns])
        shutil.rmtree(work, ignore_errors=True)
        try:
            os.unlink("/run/wireguard/%s.sock" % ifname)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    main()
