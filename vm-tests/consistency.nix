# Mistakes in the VM tests that evaluation can show, checked before anything is built:
#   - the operator CLI in a test script signs for the node's configured server id (without
#     SERVER_ID it signs for the host name, and the daemon answers every call with 401);
#   - a test's own unit that needs a database runs after the unit that creates it (nixpkgs'
#     postgresql-setup.service, not postgresql.service);
#   - readiness probes with curl fail on an HTTP error (`-f`): a 502 is no readiness.
# Evaluates to a trivial derivation, or fails naming each broken test.
{
  pkgs,
  tests,
}: let
  inherit (pkgs) lib;
  lines = s: builtins.filter builtins.isString (builtins.split "\n" s);

  nodesOf = test: builtins.attrValues test.nodes;
  script = test: test.config.testScript;

  cliSignsForTheNode = test:
    lib.all (node: let
      cfg = node.services.waylume-server;
      id = cfg.settings.server_id;
    in
      !cfg.enable || id == null || !(lib.hasInfix "waylume-server peers" (script test) || lib.hasInfix "{CLI} peers" (script test)) || lib.hasInfix "SERVER_ID=${id} " (script test))
    (nodesOf test);

  # Targets are ordered after what they require or want (systemd.target(5)).
  orderedAfter = node: unit: dep:
    builtins.elem dep unit.after
    || lib.any (t:
      lib.hasSuffix ".target" t
      && (let
        target = node.systemd.targets.${lib.removeSuffix ".target" t} or null;
      in
        target != null && builtins.elem dep (target.requires ++ target.wants)))
    unit.after;
  databaseSetupFirst = test:
    lib.all (node: let
      services = node.systemd.services;
      creates = lib.filter (n: lib.hasInfix "CREATE DATABASE" (services.${n}.script or "")) (builtins.attrNames services);
      migrations = lib.filter (n: lib.hasInfix "psql" (services.${n}.script or "") && !(builtins.elem n creates) && n != "postgresql") (builtins.attrNames services);
    in
      lib.all (m: lib.all (c: orderedAfter node services.${m} "${c}.service") creates) migrations)
    (nodesOf test);

  probesFailOnErrors = test:
    !(lib.any (l: builtins.match ".*wait_until_succeeds\\(\"curl( -[a-eg-zA-Z]+)* [^-].*" l != null) (lines (script test)));

  checks = {inherit cliSignsForTheNode databaseSetupFirst probesFailOnErrors;};
  broken = lib.concatLists (lib.mapAttrsToList (name: test:
    lib.concatLists (lib.mapAttrsToList (check: f: lib.optional (!(f test)) "${name}: ${check}") checks))
  tests);
in
  if broken == []
  then pkgs.runCommand "waylume-vm-tests-consistency" {} "echo ${toString (builtins.length (builtins.attrNames tests))} tests consistent > $out"
  else throw "VM tests inconsistent: ${lib.concatStringsSep "; " broken}"
