#!/usr/bin/env bash
# The operator binary as the Dockerfile builds it (release, --locked, --no-default-features: no `demo`, no fake
# API server), copied to target/image/tencent-cert-operator, where tests/e2e/node.rs and hack/bench-node.sh
# take it from to pack an image with `kube-local image-from-binary`. Copied aside because any later plain
# `cargo build --release` (hack/bench-scale.sh does one) re-links target/release/tencent-cert-operator with
# the default features.
#
#   hack/image-binary.sh        prints the path of the copy
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked --no-default-features --bin tencent-cert-operator >&2
mkdir -p "${target}/image"
cp "${target}/release/tencent-cert-operator" "${target}/image/tencent-cert-operator.tmp"
mv "${target}/image/tencent-cert-operator.tmp" "${target}/image/tencent-cert-operator"
if "${target}/image/tencent-cert-operator" demo --help >/dev/null 2>&1; then
  echo "image-binary: the binary has the demo command: the build did not leave out the default features" >&2
  exit 1
fi
echo "${target}/image/tencent-cert-operator"
