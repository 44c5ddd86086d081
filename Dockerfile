# syntax=docker/dockerfile:1
#
# kubernetes-image-puller: the controller and the static sleeper `kip-sleep`,
# both fully static (musl), in an image with nothing else in it.
#
#   docker build -t quay.io/example/kubernetes-image-puller:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... --push .
#
# The cache pods' init container runs `/bin/cp /bin/sleep /kip/sleep` from this
# image (the protocol of the upstream image too), so kip-sleep, which acts by the
# name it is called by, is also installed as /bin/cp and /bin/sleep.

# Pinned (toolchain and Alpine release) so that a rebuild of the same commit uses the same compiler and
# musl; bump it deliberately together with rust-version in Cargo.toml. `scratch` below is empty by
# definition and needs no pin.
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-alpine3.22

FROM ${RUST_IMAGE} AS build
# gcc and musl-dev: C parts of dependencies (ring). On Alpine the host target is
# *-unknown-linux-musl, which links statically by default.
RUN apk add --no-cache musl-dev gcc ca-certificates
WORKDIR /src
COPY . .
# Registry, git checkouts and target/ live in BuildKit cache mounts: rebuilds
# only recompile what changed. target/ is not in the image, so the binaries are
# copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/kubernetes-image-puller target/release/kip-sleep /out/ \
 && for b in /out/*; do \
      if readelf -l "$b" | grep -q 'Requesting program interpreter'; then \
        echo "$b is not statically linked" >&2; exit 1; \
      fi; \
    done

FROM scratch
LABEL org.opencontainers.image.title="kubernetes-image-puller" \
      org.opencontainers.image.description="Keeps container images cached on Kubernetes nodes" \
      org.opencontainers.image.licenses="EPL-2.0"
# CA bundle for any TLS peer that is not the cluster API (which uses the
# ServiceAccount's own ca.crt).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/kubernetes-image-puller /out/kip-sleep /usr/local/bin/
COPY --from=build /out/kip-sleep /bin/sleep
COPY --from=build /out/kip-sleep /bin/cp
# Non-root, numeric so that runAsNonRoot can be verified; no shell needed.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kubernetes-image-puller"]
CMD ["run"]
