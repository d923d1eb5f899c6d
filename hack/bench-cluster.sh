#!/usr/bin/env bash
# Benchmark for issue 13: one ClusterTencentCertificate over N namespaces (default 1000) on the cluster of
# KUBECONFIG (a disposable one: kube-local). Reports the time from creating the resource until every
# namespace holds the Secret (and until Ready=True), the Tencent downloads (the simulator's count), and the
# operator's peak RSS. Writes a JSON report to benches/results/cluster/.
#
#   KUBECONFIG=... hack/bench-cluster.sh [--namespaces N] [--latency MS] [--keep]
#
# Uses target/release/tencent-cert-operator (built if missing). Namespaces are named tco-bench-ct-NNNN and
# labelled tco-bench-ct=yes; they are deleted at the end unless --keep.
set -euo pipefail
cd "$(dirname "$0")/.."

n=1000
latency=100
keep=false
while [ $# -gt 0 ]; do
  case "$1" in
    --namespaces) n=$2; shift 2 ;;
    --latency) latency=$2; shift 2 ;;
    --keep) keep=true; shift ;;
    *) echo "usage: $0 [--namespaces N] [--latency MS] [--keep]" >&2; exit 2 ;;
  esac
done
: "${KUBECONFIG:?set KUBECONFIG to a disposable cluster}"
bin=target/release/tencent-cert-operator
[ -x "$bin" ] || cargo build --release --locked
work=$(mktemp -d)
cleanup() {
  [ -n "${operator:-}" ] && kill "$operator" 2>/dev/null || true
  [ -n "${sim:-}" ] && kill "$sim" 2>/dev/null || true
  kubectl delete ctcert tco-bench-wildcard --ignore-not-found --wait=false >/dev/null 2>&1 || true
  if ! $keep; then
    kubectl get ns -l tco-bench-ct -o name | xargs -r kubectl delete --wait=false >/dev/null 2>&1 || true
    kubectl delete ns tco-bench-ct-ops --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

secret_id=AKIDbenchCLUSTER0001
secret_key=bench-cluster-secret-key
"$bin" sim --secret-id "$secret_id" --secret-key "$secret_key" --certificate 'wildBench1:domain=*.bench.test' \
  --latency "*=${latency}" >"$work/sim.out" 2>"$work/sim.log" &
sim=$!
for _ in $(seq 1 100); do [ -s "$work/sim.out" ] && break; sleep 0.1; done
endpoint=$(head -1 "$work/sim.out")

kubectl apply --server-side -f crds/tencentcertificate.yaml -f crds/clustertencentcertificate.yaml >/dev/null
kubectl wait --for=condition=Established crd/clustertencentcertificates.tencentcert.io --timeout=60s >/dev/null
if kubectl get ns -l tco-bench-ct --no-headers 2>/dev/null | grep -q Terminating; then
  echo "waiting for the namespaces of an earlier run to go"
  kubectl wait --for=delete ns -l tco-bench-ct --timeout=300s >/dev/null 2>&1 || true
fi
echo "creating ${n} namespaces"
{
  for i in $(seq -f '%04g' 1 "$n"); do
    printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: tco-bench-ct-%s\n  labels: {tco-bench-ct: "yes"}\n' "$i"
  done
  printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: tco-bench-ct-ops\n'
} | kubectl apply --server-side -f - >/dev/null
kubectl -n tco-bench-ct-ops create secret generic tencent --from-literal=secretId="$secret_id" \
  --from-literal=secretKey="$secret_key" --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null

TENCENTCLOUD_ENDPOINT="$endpoint" TENCENTCLOUD_ALLOW_INSECURE_ENDPOINT=true RUST_LOG=warn "$bin" run --metrics-addr 127.0.0.1:0 >/dev/null 2>"$work/operator.log" &
operator=$!
sleep 2
start=$(date +%s.%N)
cat <<YAML | kubectl apply --server-side -f - >/dev/null
apiVersion: tencentcert.io/v1alpha1
kind: ClusterTencentCertificate
metadata: {name: tco-bench-wildcard}
spec:
  certificateId: wildBench1
  secretName: wildcard-tls
  credentialsRef: {namespace: tco-bench-ct-ops, name: tencent}
  namespaceSelector: {matchLabels: {tco-bench-ct: "yes"}}
YAML

all_secrets=""
ready=""
peak=0
while true; do
  now=$(date +%s.%N)
  rss=$(awk '/VmHWM/ {print $2}' "/proc/${operator}/status" 2>/dev/null || echo 0)
  [ "${rss:-0}" -gt "$peak" ] && peak=$rss
  if [ -z "$all_secrets" ]; then
    count=$(kubectl get secrets -A -l tencentcert.io/cluster-certificate-name=tco-bench-wildcard --no-headers 2>/dev/null | wc -l)
    [ "$count" -ge "$n" ] && all_secrets=$(echo "$now - $start" | bc)
  fi
  if [ -z "$ready" ]; then
    state=$(kubectl get ctcert tco-bench-wildcard -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}/{.status.readyNamespaces}' 2>/dev/null || true)
    [ "$state" = "True/${n}" ] && ready=$(echo "$now - $start" | bc)
  fi
  [ -n "$all_secrets" ] && [ -n "$ready" ] && break
  if [ "$(echo "$now - $start > 600" | bc)" = 1 ]; then echo "not done within 600 s" >&2; break; fi
  sleep 0.5
done
stats=$(curl -s "${endpoint}/_sim/stats")
# Successful downloads (run on a cluster without other TencentCertificates: they would call the simulator too).
downloads=$(echo "$stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s.get("by_action",{}).get("DownloadCertificate",{}).get("Success",0))' 2>/dev/null || echo "?")
rss_mib=$(echo "scale=1; $peak / 1024" | bc)
report="benches/results/cluster/ctcert-${n}.json"
cat >"$report" <<JSON
{"namespaces": ${n}, "latency_ms": ${latency}, "seconds_until_every_secret": ${all_secrets:-null}, "seconds_until_ready": ${ready:-null}, "tencent_downloads": ${downloads}, "tencent_requests": $(echo "$stats" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("requests"))'), "operator_peak_rss_mib": ${rss_mib}, "simulator_stats": ${stats}}
JSON
echo "namespaces ${n}: every Secret after ${all_secrets:-?} s, Ready after ${ready:-?} s; Tencent downloads ${downloads}; operator peak RSS ${rss_mib} MiB"
echo "report: ${report}"
