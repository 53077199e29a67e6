# Registration and heartbeats against the real thing: PostgreSQL with the repository's Supabase
# migration, nixpkgs' PostgREST behind a /rest/v1/ prefix as on Supabase, and a service_role key
# signed with PostgREST's JWT secret. A control-plane outage leaves the node serving.
{lib, ...}: let
  common = import ./common.nix;
  migrations = ../supabase/migrations;
  # !!! Test fixtures: real secrets never go into the store.
  jwtSecret = "waylume-vm-test-jwt-secret-0123456789abcdef";
  control = "203.0.113.20";
in {
  name = "waylume-control-plane";

  nodes = {
    node = {
      imports = [common.nodeModule];
      services.waylume-server = {
        supabaseKeyFile = "/etc/waylume/supabase-key";
        settings.supabase = {
          url = "http://${control}";
          # The test network is private; a real fleet's URL is https.
          insecure_http = true;
          heartbeat_interval_secs = 5;
          usage_interval_secs = 5;
        };
      };
      # Held back until the test has minted the key, as the operator's provisioning would.
      systemd.services.waylume-server.wantedBy = lib.mkForce [];
    };

    control = {
      config,
      pkgs,
      ...
    }: {
      imports = [(common.staticAddress lib "eth1" [control])];
      virtualisation.vlans = [2];
      networking.useDHCP = false;
      networking.firewall.allowedTCPPorts = [80];
      environment.systemPackages = [pkgs.curl];

      services.postgresql = {
        enable = true;
        ensureDatabases = ["waylume"];
        # The roles Supabase provides before any migration runs.
        initialScript = pkgs.writeText "supabase-roles.sql" ''
          CREATE ROLE anon NOLOGIN;
          CREATE ROLE authenticated NOLOGIN;
          CREATE ROLE service_role NOLOGIN BYPASSRLS;
          CREATE ROLE authenticator LOGIN NOINHERIT;
          GRANT anon, authenticated, service_role TO authenticator;
        '';
        authentication = ''
          local waylume authenticator trust
        '';
      };

      systemd.services.waylume-migration = {
        description = "Apply the Waylume Supabase migration";
        wantedBy = ["multi-user.target"];
        # postgresql.target: reached once postgresql-setup.service has run initialScript and
        # created the ensureDatabases, which the migration needs.
        requires = ["postgresql.target"];
        after = ["postgresql.target"];
        before = ["postgrest.service"];
        path = [config.services.postgresql.package];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          User = "postgres";
        };
        script = ''
          for f in $(ls ${migrations}/*.sql | sort); do
            psql -v ON_ERROR_STOP=1 -d waylume -f "$f"
          done
        '';
      };

      environment.etc."postgrest/jwt-secret" = {
        text = jwtSecret;
        mode = "0400";
      };
      services.postgrest = {
        enable = true;
        jwtSecretFile = "/etc/postgrest/jwt-secret";
        settings = {
          db-uri = {
            host = "/run/postgresql";
            dbname = "waylume";
            user = "authenticator";
          };
          db-schemas = "public";
          db-anon-role = "anon";
          server-port = 3001;
          server-unix-socket = null;
        };
      };
      systemd.services.postgrest.after = ["waylume-migration.service"];

      services.nginx = {
        enable = true;
        virtualHosts.control = {
          default = true;
          locations."/rest/v1/".proxyPass = "http://127.0.0.1:3001/";
        };
      };
    };
  };

  testScript = ''
    ${common.prelude}
    import base64, hashlib, hmac

    def b64url(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def service_role_key(secret):
        header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = b64url(json.dumps({"role": "service_role", "iss": "waylume-vm-test"}).encode())
        signature = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
        return f"{header}.{claims}.{b64url(signature)}"

    def sql(query):
        return control.succeed(f"sudo -u postgres psql -d waylume -tAc \"{query}\"").strip()

    start_all()
    control.wait_for_unit("postgrest.service")
    control.wait_for_unit("nginx.service")
    # -f: a 502 from nginx while PostgREST is not up yet is no answer.
    control.wait_until_succeeds("curl -sf -o /dev/null http://127.0.0.1/rest/v1/", timeout=60)

    with subtest("the migration keeps the servers table from anonymous callers"):
        code = control.succeed("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/rest/v1/waylume_servers").strip()
        assert code in ("401", "403"), f"anonymous read answered {code}"
        assert sql("select count(*) from waylume_servers") == "0"

    with subtest("the node registers"):
        key = service_role_key("${jwtSecret}")
        node.succeed(f"install -m 600 /dev/stdin /etc/waylume/supabase-key <<< '{key}'")
        node.systemctl("start waylume-server.service")
        node.wait_for_unit("waylume-server.service")
        control.wait_until_succeeds(
            "test \"$(sudo -u postgres psql -d waylume -tAc \"select status from waylume_servers where id = '${common.serverId}'\")\" = online",
            timeout=60,
        )
        public_key = node.succeed("wg show wg0 public-key").strip()
        assert sql("select wg_public_key from waylume_servers where id = '${common.serverId}'") == public_key

    with subtest("heartbeats advance"):
        first = sql("select extract(epoch from last_heartbeat) from waylume_servers where id = '${common.serverId}'")
        control.wait_until_succeeds(
            f"test \"$(sudo -u postgres psql -d waylume -tAc \"select extract(epoch from last_heartbeat) > {first} from waylume_servers where id = '${common.serverId}'\")\" = t",
            timeout=60,
        )

    with subtest("a control-plane outage leaves the node serving"):
        control.systemctl("stop postgrest.service")
        peer = api("create")
        assert peer["peer_id"], peer
        node.succeed("systemctl is-active waylume-server.service")
        control.systemctl("start postgrest.service")
        last = sql("select extract(epoch from last_heartbeat) from waylume_servers where id = '${common.serverId}'")
        control.wait_until_succeeds(
            f"test \"$(sudo -u postgres psql -d waylume -tAc \"select extract(epoch from last_heartbeat) > {last} from waylume_servers where id = '${common.serverId}'\")\" = t",
            timeout=90,
        )

    with subtest("stopping the node marks it offline"):
        node.systemctl("stop waylume-server.service")
        assert sql("select status from waylume_servers where id = '${common.serverId}'") == "offline"
  '';
}
