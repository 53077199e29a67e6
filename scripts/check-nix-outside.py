#!/usr/bin/python3
"""What scripts/check-nix.sh checks outside Nix with values the evaluator read from the flake.

  configs DIR BIN        run each configuration's build-time check (nix/config-check.nix) as the
                         module's build step does: the same script, the same stand-ins, on the
                         settings rendered to TOML; DIR holds the evaluated data.json
  compose DIR BIN FILE   the compose example against the OCI image: its image and tag, the
                         capabilities and device the daemon needs, environment names the daemon
                         reads (the original ones among them), and check-config on that
                         environment with stand-ins for the ${VARIABLES}
Prints one line per check; exits 1 if any failed.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import toml
import yaml

failed = []


def result(label, ok, detail=""):
    print(f"   {'ok  ' if ok else 'FAIL'} {label}{': ' + detail if detail and not ok else ''}")
    if not ok:
        failed.append(label)


def run_check(label, bin_path, check):
    """The module's build step: $waylume and $config set, then the check's own script."""
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "waylume-server.toml")
        with open(config, "w") as f:
            f.write(toml.dumps(check["settings"]))
        env = {"PATH": os.environ["PATH"], "waylume": bin_path, "config": config}
        p = subprocess.run(["bash", "-euo", "pipefail", "-c", check["script"]], env=env,
                           capture_output=True, text=True)
        result(f"check-config {label}", p.returncode == 0, f"exit {p.returncode}: {p.stderr.strip()}")


def configs(directory, bin_path):
    with open(os.path.join(directory, "data.json")) as f:
        data = json.load(f)
    count = 0
    for test, nodes in sorted(data["vmTests"].items()):
        for node, check in sorted(nodes.items()):
            run_check(f"{test} {node}", bin_path, check)
            count += 1
    for name, check in sorted(data["systems"].items()):
        run_check(f"system {name}", bin_path, check)
        count += 1
    result("configurations found", count > 0, "none evaluated")


# Stand-ins for the variables the compose file takes from the operator's env file.
STAND_INS = {
    "SUPABASE_URL": "https://stand-in.supabase.co",
    "SUPABASE_KEY": "stand-in-key",
    "SERVER_ID": "compose-check",
    "SERVER_COUNTRY": "NL",
    "SERVER_CITY": "Amsterdam",
    "WAYLUME_ENDPOINT": "192.0.2.1:51820",
    "WAYLUME_API_SECRET": "00" * 32,
}
ORIGINAL_NAMES = {"SUPABASE_URL", "SUPABASE_KEY", "SERVER_ID", "EXTERNAL_PORT", "MAX_CAPACITY",
                  "SERVER_COUNTRY"}


def daemon_env_names(root):
    with open(os.path.join(root, "src/config/raw.rs")) as f:
        return set(re.findall(r'env!\(\s*"([A-Z0-9_]+)"', f.read()))


def compose(directory, bin_path, compose_file):
    with open(os.path.join(directory, "data.json")) as f:
        image = json.load(f)["oci"]
    with open(compose_file) as f:
        service = yaml.safe_load(f)["services"]["waylume-server"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    known = daemon_env_names(root)
    env = service.get("environment", {})
    result("compose image is the flake's", service.get("image") == f"{image['name']}:{image['tag']}",
           f"{service.get('image')} vs {image['name']}:{image['tag']}")
    result("compose adds NET_ADMIN", "NET_ADMIN" in service.get("cap_add", []))
    result("compose passes /dev/net/tun",
           any(d.split(":")[0] == "/dev/net/tun" for d in service.get("devices", [])))
    result("compose enables forwarding",
           str(service.get("sysctls", {}).get("net.ipv4.ip_forward")) == "1")
    unknown = sorted(set(env) - known)
    result("compose uses only names the daemon reads", not unknown, f"unknown: {unknown}")
    missing = sorted(ORIGINAL_NAMES - set(env))
    result("compose keeps the original names", not missing, f"missing: {missing}")
    image_env = dict(e.split("=", 1) for e in image["config"]["Env"])
    unknown = sorted(set(image_env) - known)
    result("image uses only names the daemon reads", not unknown, f"unknown: {unknown}")

    values = {}
    for name, value in env.items():
        value = str(value)
        m = re.fullmatch(r"\$\{([A-Z0-9_]+)\}", value)
        if m:
            if m.group(1) not in STAND_INS:
                result(f"stand-in for ${{{m.group(1)}}}", False, "add one to STAND_INS")
                continue
            value = STAND_INS[m.group(1)]
        values[name] = value
    # As the container starts: the image's environment, then the compose file's.
    full = {**image_env, **values}
    with tempfile.TemporaryDirectory() as state:
        full["WAYLUME_STATE_DIR"] = state
        p = subprocess.run(["env", "-i", *[f"{k}={v}" for k, v in sorted(full.items())], bin_path,
                            "check-config"], capture_output=True, text=True)
    result("check-config on the compose environment", p.returncode == 0,
           f"exit {p.returncode}: {p.stderr.strip()}")
    entry = image["config"]["Entrypoint"]
    result("image entrypoint serves", entry[1:] == ["serve"] and entry[0].endswith("/bin/waylume-server"),
           str(entry))


def main():
    cmd = sys.argv[1]
    if cmd == "configs":
        configs(sys.argv[2], sys.argv[3])
    elif cmd == "compose":
        compose(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown command {cmd}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
