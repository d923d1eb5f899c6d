#!/usr/bin/env bash
# The scale benchmark of issue 10 (benches/scale.rs; see BENCHMARKS.md): builds the release binary and runs
# the harness against the cluster of KUBECONFIG. Every flag is passed to the harness:
#
#   hack/bench-scale.sh --n 5000 --k 500 --m 10 --out target/bench-scale/n5000-k500.json
#   hack/bench-scale.sh --help
#
# `cargo bench` builds the harness with the dev-dependencies' features unified (kube gets `cel`), and it may
# then re-link target/release/tencent-cert-operator with them. So the operator under measurement is built by
# a plain `cargo build --release` afterwards and copied aside, and the harness runs that copy.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${KUBECONFIG:-}" ]]; then
  echo "KUBECONFIG is not set: the benchmark needs a real API server (see DEVELOPERS.md)" >&2
  exit 2
fi

cargo bench --locked --bench scale --no-run
cargo build --locked --release --bin tencent-cert-operator
mkdir -p target/bench-scale
cp target/release/tencent-cert-operator target/bench-scale/tencent-cert-operator
export BENCH_BINARY="${BENCH_BINARY:-target/bench-scale/tencent-cert-operator}"
exec cargo bench --locked --bench scale -- "$@"
