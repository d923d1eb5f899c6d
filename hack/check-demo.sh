#!/usr/bin/env bash
# The README's first command (`cargo run -- demo`) on a machine with no cluster, as a newcomer runs it: it
# must print every demo outcome, give a kubeconfig that kubectl can use, and clean up on Ctrl-C.
# Called by .ci/run; runs the command exactly as the README gives it.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true' EXIT
# `cargo run` execs the binary, so $pid is the demo itself and SIGINT is Ctrl-C.
env -u KUBECONFIG cargo run -- demo >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q "demo resources settled" "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "check-demo: the demo exited early"; exit 1; }
  sleep 1
done
cat "$log"
fail() { echo "check-demo: $*"; exit 1; }
grep -q "all 4 demo resources settled" "$log" || fail "no settled summary"
grep -Eq "demo-shop +Ready +certificate demo0001 -> Secret default/demo-shop" "$log" || fail "demo-shop not Ready"
grep -Eq "demo-api +Ready +certificate demo0002" "$log" || fail "demo-api not Ready"
grep -Eq "demo-no-key +KeyMissing" "$log" || fail "demo-no-key not KeyMissing"
grep -Eq "demo-expired +Expired" "$log" || fail "demo-expired not Expired"
kubeconfig=$(sed -n 's/^  export KUBECONFIG=//p' "$log")
[ -f "$kubeconfig" ] || fail "the printed kubeconfig ${kubeconfig} does not exist"

if command -v kubectl >/dev/null; then
  # Captured, not tee'd to /dev/stderr: reopening a redirected log through /dev/stderr writes at offset 0.
  table=$(KUBECONFIG="$kubeconfig" kubectl get tcert -o wide)
  echo "$table"
  echo "$table" | grep -Eq "^demo-no-key .*False +KeyMissing" \
    || fail "kubectl get tcert -o wide does not show demo-no-key KeyMissing"
  KUBECONFIG="$kubeconfig" kubectl describe tcert demo-expired | grep -q "Warning  Expired" \
    || fail "kubectl describe tcert demo-expired shows no Expired event"
else
  echo "check-demo: kubectl not installed, kubectl part skipped"
fi

kill -INT "$pid"
status=0
wait "$pid" || status=$?
pid=
tail -1 "$log"
[ "$status" -eq 0 ] || fail "exit status ${status} after Ctrl-C"
[ ! -e "$(dirname "$kubeconfig")" ] || fail "$(dirname "$kubeconfig") left behind"
echo "check-demo: ok"
