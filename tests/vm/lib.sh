# shellcheck shell=bash disable=SC2034  # FAILED is read by the scripts that source this
# Helpers shared by the in-VM test scripts (sourced, not executed).
FAILED=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILED=1; }
check() { # check DESCRIPTION COMMAND... : PASS when the command succeeds
    local what=$1; shift
    if "$@" >/tmp/check.out 2>&1; then pass "$what"; else fail "$what"; sed 's/^/    /' /tmp/check.out; fi
}
check_not() { # check_not DESCRIPTION COMMAND... : PASS when the command fails
    local what=$1; shift
    if "$@" >/tmp/check.out 2>&1; then fail "$what"; sed 's/^/    /' /tmp/check.out; else pass "$what"; fi
}
# require DESCRIPTION COMMAND... : like check, but stop the scenario on failure, because every
# later step depends on it and would only add noise.
require() {
    local what=$1; shift
    if "$@" >/tmp/check.out 2>&1; then
        pass "$what"
    else
        fail "$what"
        sed 's/^/    /' /tmp/check.out
        echo "FAIL: stopping: later steps need \"$what\""
        exit 1
    fi
}
# wait_for SECONDS COMMAND... : poll a condition every 0.2 s instead of sleeping a fixed time.
wait_for() {
    local tries=$(($1 * 5)); shift
    while [ "$tries" -gt 0 ]; do
        "$@" >/dev/null 2>&1 && return 0
        tries=$((tries - 1))
        sleep 0.2
    done
    return 1
}
