# Speed limits, measured with iperf3 through the tunnel: a limited peer stays near its limit in
# both directions while an unlimited one is clearly faster. The receiver's number is read
# (the sender's overstates the rate).
let
  common = import ./common.nix;
in {
  name = "waylume-speed-limit";

  nodes = {
    node = common.nodeModule;
    client1 = common.clientModule 1;
    client2 = common.clientModule 2;
    web = common.webModule;
  };

  testScript = ''
    ${common.prelude}
    start_all()
    node.wait_for_unit("waylume-server.service")
    web.wait_for_unit("iperf3.service")
    limited = connect(client1, "wl0", "--download-kbps 2000 --upload-kbps 1000")
    connect(client2, "wl0")
    for client in (client1, client2):
        client.wait_until_succeeds("ping -c 1 -W 2 ${common.web}", timeout=30)

    def rate(client, reverse):
        flag = "-R" if reverse else ""
        out = client.succeed(f"iperf3 -c ${common.web} -t 3 -J {flag}")
        return json.loads(out)["end"]["sum_received"]["bits_per_second"]

    with subtest("the limited peer stays near its limits"):
        down = rate(client1, reverse=True)
        up = rate(client1, reverse=False)
        print(f"limited peer: download {down:.0f} bit/s (limit 2000000), upload {up:.0f} bit/s (limit 1000000)")
        assert 0 < down <= 2000000 * 1.15, f"download {down}"
        assert 0 < up <= 1000000 * 1.15, f"upload {up}"

    with subtest("an unlimited peer is not held back"):
        free = rate(client2, reverse=True)
        print(f"unlimited peer: download {free:.0f} bit/s")
        assert free > 2000000 * 3, f"unlimited download {free}"

    with subtest("a changed limit takes effect"):
        node.succeed(f"{CLI} peers speed-limit {limited['peer_id']} --download-kbps 4000 --upload-kbps 4000")
        client1.wait_until_succeeds(
            "test $(iperf3 -c ${common.web} -t 2 -J -R | jq '.end.sum_received.bits_per_second > 2500000') = true",
            timeout=60,
        )
        down = rate(client1, reverse=True)
        assert down <= 4000000 * 1.15, f"download {down} over the new limit"
  '';
}
