# The operator image: a release build of tencent-cert-operator on distroless (glibc, CA certificates, no shell).
#   docker build -t tencent-cert-operator:dev --build-arg TCO_GIT_COMMIT="$(git rev-parse --short=12 HEAD)" .
# It runs as the distroless "nonroot" user 65532, which the Helm chart's securityContext expects.

FROM rust:1-bookworm AS build
# The build context has no .git: build.rs takes the commit (for `version` and the build_info metric) from here.
ARG TCO_GIT_COMMIT=unknown
WORKDIR /src
COPY . .
# --no-default-features: without the `demo` feature, the binary carries no fake API server (the simulator stays,
# for `sim` and `run --demo`).
RUN cargo build --release --locked --no-default-features --bin tencent-cert-operator \
 && install -D -m 0755 target/release/tencent-cert-operator /out/tencent-cert-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="tencent-cert-operator" \
      org.opencontainers.image.description="Keeps kubernetes.io/tls Secrets in sync with Tencent Cloud SSL certificates" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/tencent-cert-operator /usr/local/bin/tencent-cert-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tencent-cert-operator"]
CMD ["run"]
