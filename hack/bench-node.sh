#!/usr/bin/env bash
# The chart's defaults under load (issue 24): the operator as a Pod, installed by `helm install --wait` with
# the chart's default requests and limits, on kube-local's real node (`kube-local up --node`), against N
# TencentCertificates over K certificate ids in M namespaces, all created before it starts (its first list
# is the largest). The Tencent API simulator runs as a Pod of the same image (pods reach only pod IPs), with
# Tencent's rate limit (10/s per action) and 100 ms latency. It measures, and asserts nothing about time:
#   - time from `helm install` to every resource Ready;
#   - the container's memory from its cgroup (v1: memory.max_usage_in_bytes, the peak the limit is judged
#     against, page cache included; memory.failcnt, the times it hit the limit) and the process's peak RSS
#     (VmHWM), sampled every 5 s;
#   - restarts and OOM kills of the container (restartCount, lastState, the cgroup's oom_kill count).
#
#   KUBECONFIG=... KUBE_LOCAL=.../kube-local hack/bench-node.sh [--n 5000] [--k 500] [--m 10]
#       [--binary target/image/tencent-cert-operator] [--out benches/results/node/n5000.json]
#       [--timeout 1800] [--set KEY=VALUE]... [--keep]
#
# The binary is the Dockerfile's build (hack/image-binary.sh: release, --no-default-features). --set passes
# chart values (e.g. --set resources.limits.memory=128Mi to try other limits). The JSON report has the figures
# and the chart's resources as installed. Cleans up (helm uninstall, namespaces) unless --keep.
set -euo pipefail
cd "$(dirname "$0")/.."

n=5000 k=500 m=10 timeout=1800 keep=0
binary=target/image/tencent-cert-operator
out=""
sets=()
while [ $# -gt 0 ]; do
  case $1 in
    --n) n=$2; shift 2 ;;
    --k) k=$2; shift 2 ;;
    --m) m=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "bench-node: unknown option $1" >&2; exit 2 ;;
  esac
done
out=${out:-target/bench-node/n${n}-k${k}-m${m}.json}
helm=${HELM:-helm}
: "${KUBECONFIG:?KUBECONFIG: the kube-local instance (up --node)}"
: "${KUBE_LOCAL:?KUBE_LOCAL: the kube-local script}"
[ -x "${binary}" ] || { echo "bench-node: no binary ${binary} (hack/image-binary.sh builds it)" >&2; exit 2; }
kubectl get nodes -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}' | grep -q True ||
  { echo "bench-node: no Ready node (kube-local up --node)" >&2; exit 2; }

release=tco-bench
ns=tco-bench
prefix=tco-bench-app
secret_id=AKIDbenchNODE00001
secret_key=bench-node-secret-key
work=$(mktemp -d)
export HELM_CACHE_HOME="${work}/helm/cache" HELM_CONFIG_HOME="${work}/helm/config" HELM_DATA_HOME="${work}/helm/data"
started=$(date +%s)
log() { echo "[$(( $(date +%s) - started ))s] $*" >&2; }

cleanup() {
  if [ "${keep}" = 0 ]; then
    log "cleaning up"
    "${helm}" uninstall "${release}" -n "${ns}" --wait >/dev/null 2>&1 || true
    for i in $(seq 0 $((m - 1))); do kubectl delete namespace "${prefix}-${i}" --wait=false >/dev/null 2>&1 || true; done
    kubectl delete namespace "${ns}" --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "${work}"
}
trap cleanup EXIT

# An earlier run's namespaces may still be terminating (deleting thousands of resources takes minutes).
until [ -z "$(kubectl get namespace -o name | grep -E "^namespace/(${ns}|${prefix}-[0-9]+)$" || true)" ]; do
  [ $(( $(date +%s) - started )) -lt 900 ] || { echo "bench-node: the namespaces of an earlier run are still there" >&2; exit 1; }
  log "waiting for the namespaces of an earlier run to go"
  sleep 10
done

tag="bench-$(sha256sum "${binary}" | cut -c1-12)"
log "image tco-bench:${tag} from ${binary} ($(du -h "${binary}" | cut -f1))"
"${KUBE_LOCAL}" image-from-binary "tco-bench:${tag}" "${binary}" >/dev/null

kubectl create namespace "${ns}" >/dev/null
# The simulator: K certificates (p256: cheap to generate), Tencent's limit, 100 ms per call.
{
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: tencent-sim, namespace: ${ns}, labels: {app: tencent-sim}}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: sim
      image: tco-bench:${tag}
      imagePullPolicy: Never
      env: [{name: SIM_SECRET_ID, value: ${secret_id}}, {name: SIM_SECRET_KEY, value: ${secret_key}}]
      readinessProbe: {tcpSocket: {port: 8443}, periodSeconds: 2}
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
      args:
        - sim
        - --listen=0.0.0.0:8443
        - --rate-limit=10
        - --latency=*=100
EOF
  for i in $(seq 0 $((k - 1))); do printf '        - --certificate=bench%05d:key=p256\n' "${i}"; done
} | kubectl apply -f - >/dev/null
kubectl -n "${ns}" wait --for=condition=Ready pod/tencent-sim --timeout=300s >/dev/null
sim_ip=$(kubectl -n "${ns}" get pod tencent-sim -o jsonpath='{.status.podIP}')
log "simulator pod ready at http://${sim_ip}:8443 (${k} certificates)"

# M namespaces with a credentials Secret each, and N TencentCertificates round-robin over them and the K ids.
python3 - "${n}" "${k}" "${m}" "${prefix}" "${secret_id}" "${secret_key}" >"${work}/objects.yaml" <<'EOF'
import sys
n, k, m, prefix, secret_id, secret_key = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:]
for i in range(m):
    print(f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {prefix}-{i}}}")
    print(f"---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tencent, namespace: {prefix}-{i}, labels: {{tencentcert.io/credentials: 'true'}}}}")
    print(f"stringData: {{secretId: {secret_id}, secretKey: {secret_key}}}")
for j in range(n):
    print(f"---\napiVersion: tencentcert.io/v1alpha1\nkind: TencentCertificate\nmetadata: {{name: cert-{j:05d}, namespace: {prefix}-{j % m}}}")
    print(f"spec: {{certificateId: bench{j % k:05d}, credentialsRef: {{name: tencent}}}}")
EOF
# The CRDs first (the chart's, as the install below will own them), then the objects.
"${helm}" template "${release}" charts/tencent-cert-operator -n "${ns}" --show-only templates/crds.yaml |
  kubectl apply --server-side --field-manager=helm -f - >/dev/null
kubectl wait --for=condition=Established crd/tencentcertificates.tencentcert.io --timeout=60s >/dev/null
kubectl label --overwrite crd tencentcertificates.tencentcert.io clustertencentcertificates.tencentcert.io tencentcertificatepushes.tencentcert.io app.kubernetes.io/managed-by=Helm >/dev/null
kubectl annotate --overwrite crd tencentcertificates.tencentcert.io clustertencentcertificates.tencentcert.io tencentcertificatepushes.tencentcert.io \
  "meta.helm.sh/release-name=${release}" "meta.helm.sh/release-namespace=${ns}" >/dev/null
log "creating ${m} namespaces, ${m} credentials Secrets and ${n} TencentCertificates"
kubectl create -f "${work}/objects.yaml" >/dev/null
log "created"

install_at=$(date +%s.%N)
"${helm}" install "${release}" charts/tencent-cert-operator -n "${ns}" --wait --timeout 10m \
  --set image.repository=tco-bench --set "image.tag=${tag}" --set image.pullPolicy=Never \
  --set "tencentEndpoint=http://${sim_ip}:8443" --set allowInsecureEndpoint=true "${sets[@]}" >/dev/null
installed_at=$(date +%s.%N)
pod=$(kubectl -n "${ns}" get pod -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].metadata.name}')
uid=$(kubectl -n "${ns}" get pod "${pod}" -o jsonpath='{.metadata.uid}')
resources=$(kubectl -n "${ns}" get pod "${pod}" -o jsonpath='{.spec.containers[0].resources}')
log "helm install --wait: $(python3 -c "print(round(${installed_at} - ${install_at}, 1))") s; pod ${pod}, resources ${resources}"

# The container's cgroups (cgroup v1, cgroupfs driver: .../pod<uid>/<container id>) and its process.
cgroup=$(find /sys/fs/cgroup/memory -type d -name "pod${uid}" 2>/dev/null | head -1)
[ -n "${cgroup}" ] || { echo "bench-node: no memory cgroup for pod ${uid} (cgroup v1 only)" >&2; exit 1; }
pid=""
for p in $(cat "${cgroup}"/*/cgroup.procs 2>/dev/null); do
  if tr '\0' ' ' <"/proc/${p}/cmdline" 2>/dev/null | grep -q 'tencent-cert-operator run'; then pid=${p}; fi
done
[ -n "${pid}" ] || { echo "bench-node: no operator process in ${cgroup}" >&2; exit 1; }
container_cgroup=$(dirname "$(grep -lx "${pid}" "${cgroup}"/*/cgroup.procs | head -1)")
relative=${container_cgroup#/sys/fs/cgroup/memory}
cpuacct=/sys/fs/cgroup/cpuacct${relative}
cpu=/sys/fs/cgroup/cpu${relative}
log "operator process ${pid}, cgroup ${relative}"

# Every 5 s (plus what a `kubectl get` of every resource takes): time, cgroup memory usage, its peak, working
# set (usage - inactive file pages: what the kubelet and `kubectl top` report, and evict by), VmHWM and VmRSS
# (KiB), CPU time (ns), the host's 1-min load. The peaks are the kernel's (max_usage_in_bytes, VmHWM), not
# the samples'.
samples="${work}/samples"
: >"${samples}"
sample() {
  local usage peak inactive hwm rss cpu_ns load
  usage=$(cat "${container_cgroup}/memory.usage_in_bytes" 2>/dev/null || echo 0)
  peak=$(cat "${container_cgroup}/memory.max_usage_in_bytes" 2>/dev/null || echo 0)
  inactive=$(awk '/^total_inactive_file / {print $2}' "${container_cgroup}/memory.stat" 2>/dev/null || echo 0)
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/${pid}/status" 2>/dev/null || echo 0)
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/${pid}/status" 2>/dev/null || echo 0)
  cpu_ns=$(cat "${cpuacct}/cpuacct.usage" 2>/dev/null || echo 0)
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "$(date +%s.%N) ${usage} ${peak} $(( usage - ${inactive:-0} )) ${hwm:-0} ${rss:-0} ${cpu_ns} ${load}" >>"${samples}"
}
ready=0
deadline=$(( $(date +%s) + timeout ))
while [ "$(date +%s)" -lt "${deadline}" ]; do
  sample
  ready=$(kubectl get tcert -A --no-headers -o custom-columns='R:.status.conditions[?(@.type=="Ready")].status' 2>/dev/null | grep -c '^True' || true)
  log "Ready ${ready}/${n}; $(awk 'END {printf "cgroup %.1f MiB (peak %.1f), working set %.1f MiB, RSS peak %.1f MiB, CPU %.1f s, load %s", $2/1048576, $3/1048576, $4/1048576, $5/1024, $7/1e9, $8}' "${samples}")"
  [ "${ready}" -ge "${n}" ] && break
  sleep 5
done
converged_at=$(date +%s.%N)
converged_samples=$(wc -l <"${samples}")
# A minute of steady state after convergence (routine work only).
for _ in $(seq 12); do sample; sleep 5; done

restarts=$(kubectl -n "${ns}" get pod "${pod}" -o jsonpath='{.status.containerStatuses[0].restartCount}')
last_state=$(kubectl -n "${ns}" get pod "${pod}" -o jsonpath='{.status.containerStatuses[0].lastState}')
# A restarted container has a new cgroup: the old one's counters may be gone (then null in the report).
failcnt=$(cat "${container_cgroup}/memory.failcnt" 2>/dev/null || echo None)
oom_kills=$(awk '/^oom_kill / {print $2}' "${container_cgroup}/memory.oom_control" 2>/dev/null || true)
limit=$(cat "${container_cgroup}/memory.limit_in_bytes" 2>/dev/null || echo 0)
throttled=$(awk '/^nr_throttled / {n=$2} /^throttled_time / {t=$2} /^nr_periods / {p=$2} END {printf "{\"periods\": %d, \"throttled_periods\": %d, \"throttled_s\": %.1f}", p, n, t/1e9}' "${cpu}/cpu.stat" 2>/dev/null || echo '{}')
cpu_quota=$(cat "${cpu}/cpu.cfs_quota_us" 2>/dev/null || echo -1)
mkdir -p "$(dirname "${out}")"
python3 - "${samples}" "${out}" <<EOF
import json, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
mib = lambda b: round(b / 1048576, 1)
converging = rows[:${converged_samples}]
# CPU cores used between consecutive samples (cpuacct ns over wall ns).
rates = [(b[6] - a[6]) / ((b[0] - a[0]) * 1e9) for a, b in zip(rows, rows[1:]) if b[0] > a[0]]
steady = rows[len(converging) - 1:]
report = {
    "n": ${n}, "k": ${k}, "m": ${m},
    "commit": "$(git rev-parse --short=12 HEAD)",
    "binary": "${binary}",
    "chart_resources": json.loads('${resources}' or '{}'),
    "helm_install_wait_s": round(${installed_at} - ${install_at}, 1),
    "ready": ${ready},
    "all_ready_after_install_s": round(${converged_at} - ${install_at}, 1) if ${ready} >= ${n} else None,
    "cgroup_memory_limit_mib": mib(${limit}),
    "cgroup_memory_peak_mib": mib(max(r[2] for r in rows)),
    "cgroup_memory_at_end_mib": mib(rows[-1][1]),
    "working_set_peak_mib": mib(max(r[3] for r in rows)),
    "working_set_at_end_mib": mib(rows[-1][3]),
    "process_peak_rss_mib": round(max(r[4] for r in rows) / 1024, 1),
    "process_rss_at_end_mib": round(rows[-1][5] / 1024, 1),
    "cpu_limit_cores": ${cpu_quota} / 100000 if ${cpu_quota} > 0 else None,
    "cpu_seconds_to_all_ready": round(converging[-1][6] / 1e9, 1),
    "cpu_seconds_total": round(rows[-1][6] / 1e9, 1),
    "cpu_cores_peak_between_samples": round(max(rates), 3) if rates else None,
    "sample_interval_s_mean": round((rows[-1][0] - rows[0][0]) / (len(rows) - 1), 1) if len(rows) > 1 else None,
    "cpu_cores_steady_state": round((steady[-1][6] - steady[0][6]) / ((steady[-1][0] - steady[0][0]) * 1e9), 4) if len(steady) > 1 else None,
    "cpu_throttling": json.loads('${throttled}'),
    "host_load_1m_max": max(r[7] for r in rows),
    "host_load_1m_mean": round(sum(r[7] for r in rows) / len(rows), 2),
    "memory_limit_hits_failcnt": ${failcnt},
    "oom_kills": ${oom_kills:-None},
    "restarts": ${restarts},
    "last_state": json.loads('${last_state}' or '{}'),
    "samples": len(rows),
}
json.dump(report, open(sys.argv[2], "w"), indent=2)
for key, value in report.items():
    print(f"{key:32} {value}")
EOF
log "report: ${out}"
