# syntax=docker/dockerfile:1
#
# kubernetes-image-puller: the controller and the static sleeper `kip-sleep`,
# both fully static (glibc, +crt-static), in an image with nothing else in it.
#
#   docker build -t quay.io/example/kubernetes-image-puller:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... --push .
#
# The cache pods' init container runs `/bin/cp /bin/sleep /kip/sleep` from this
# image (the protocol of the upstream image too), so kip-sleep, which acts by the
# name it is called by, is also installed as /bin/cp and /bin/sleep.

# Pinned (toolchain and Debian release) so that a rebuild of the same commit uses the same compiler and
# glibc; bump it deliberately together with rust-version in Cargo.toml. `scratch` below is empty by
# definition and needs no pin.
# glibc rather than musl (an Alpine build before): the e2e harness runs this same static
# glibc build on its real node, and musl's malloc and memcpy made a large config's load (and the admission
# webhook's answer) about twice as slow (README, benchmarks). Static glibc resolves names with only the
# /etc/hosts and /etc/resolv.conf that kubelet mounts into every container.
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm
# checkov:skip=CKV_DOCKER_7: the base image is ${RUST_IMAGE}, whose default above is pinned to a version tag; checkov does not resolve ARG defaults (ci/release-checks.sh checks the pin)
# Where the binaries come from: "build" compiles them in the stage below; "prebuilt" takes already built static
# binaries from prebuilt/ in the build context (kubernetes-image-puller, kip-sleep, ca-certificates.crt), as the
# e2e harness does offline (e2e/cluster/images.sh). Both feed the same final stage.
ARG BINARIES=build

# Multi-arch (`--platform linux/amd64,linux/arm64`): this stage runs once per target platform, on that
# platform's variant of the Rust image (natively, or under QEMU emulation on another host), so each build is
# a native build with no cross toolchain.
FROM ${RUST_IMAGE} AS build
# Set by BuildKit for each platform of a multi-platform build: keys the target/ cache below.
ARG TARGETPLATFORM
# The Debian Rust image has gcc (the C parts of ring) and the CA bundle already: nothing to install.
WORKDIR /src
COPY . .
# Registry, git checkouts and target/ live in BuildKit cache mounts: rebuilds
# only recompile what changed. target/ is not in the image, so the binaries are
# copied out in the same step. target/ gets one cache per platform, so that the
# builds of a multi-platform build do not share (and keep rebuilding) one
# target/ holding binaries of the other architecture. `--target`: the static
# flag then applies to the binaries only, not to build scripts and proc-macros,
# which cannot be static with glibc.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=kip-target-${TARGETPLATFORM},target=/src/target,sharing=locked \
    target="$(rustc --print host-tuple)" \
 && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --bins --target "$target" \
 && mkdir -p /out \
 && cp "target/$target/release/kubernetes-image-puller" "target/$target/release/kip-sleep" \
      /etc/ssl/certs/ca-certificates.crt /out/ \
 && for b in /out/kubernetes-image-puller /out/kip-sleep; do \
      readelf -l "$b" >/tmp/program-headers || exit 1; \
      if grep -q 'Requesting program interpreter' /tmp/program-headers; then \
        echo "$b is not statically linked" >&2; exit 1; \
      fi; \
    done

FROM scratch AS prebuilt
COPY prebuilt/ /out/

# ARG in FROM picks the stage by name; the stage not picked is never built.
FROM ${BINARIES} AS binaries

FROM scratch
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK: Kubernetes ignores it and probes /healthz and /readyz on port 8080 (the chart's liveness and readiness probes); the scratch image has no shell or client to run one
LABEL org.opencontainers.image.title="kubernetes-image-puller" \
      org.opencontainers.image.description="Keeps container images cached on Kubernetes nodes" \
      org.opencontainers.image.licenses="EPL-2.0"
# CA bundle for any TLS peer that is not the cluster API (which uses the
# ServiceAccount's own ca.crt).
COPY --from=binaries /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=binaries /out/kubernetes-image-puller /out/kip-sleep /usr/local/bin/
COPY --from=binaries /out/kip-sleep /bin/sleep
COPY --from=binaries /out/kip-sleep /bin/cp
# Non-root, numeric so that runAsNonRoot can be verified; no shell needed.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kubernetes-image-puller"]
CMD ["run"]
