#!/usr/bin/env bash
# Builds the images the real node runs, FROM scratch and offline with buildah, and pushes them to the loopback
# registry (no public registry is reachable):
#   kip-e2e/kubernetes-image-puller:e2e  this project, from the Dockerfile's final stage with static binaries
#   kip-e2e/pause:1                      the pod sandbox: kip-sleep, which waits for SIGTERM when run bare
#   kip-e2e/busybox:1, kip-e2e/tools:1   test images (busybox-static), with different content
# Prints nothing on stdout; KIP_STATIC_BIN names the directory of the static binaries it built.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

buildah_() {
  buildah --root "$DIR/buildah/root" --runroot "$DIR/buildah/run" --storage-driver vfs "$@"
}
push() { # IMAGE: local image to the loopback registry
  buildah_ push --quiet --tls-verify=false "$1" "docker://$1" >/dev/null
  log "pushed $1"
}

# The project's binaries, linked statically (glibc, +crt-static), in their own target directory.
target="$(rustc -vV | awk '/^host:/ {print $2}')"
static_bin="$ROOT/target/$target/release"
log "building the static release binaries ($target)"
(cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release --locked \
  --target "$target" --bins)
for b in kubernetes-image-puller kip-sleep; do
  if readelf -l "$static_bin/$b" | grep -q 'Requesting program interpreter'; then
    die "$static_bin/$b is not statically linked"
  fi
done

# Pushed already from the same binaries, busybox and Dockerfile: nothing to do.
stamp="$(cat "$static_bin/kubernetes-image-puller" "$static_bin/kip-sleep" /bin/busybox "$ROOT/Dockerfile" "$0" |
  sha256sum | cut -c1-32)"
if [[ -f $DIR/images.stamp && $(cat "$DIR/images.stamp") == "$stamp" ]] &&
  curl -sf "http://$REGISTRY/v2/kip-e2e/kubernetes-image-puller/manifests/e2e" -o /dev/null \
    -H "Accept: application/vnd.oci.image.manifest.v1+json"; then
  log "images up to date in $REGISTRY"
  exit 0
fi

ctx="$DIR/image-context"
rm -rf "$ctx"
mkdir -p "$ctx/prebuilt"
cp "$static_bin/kubernetes-image-puller" "$static_bin/kip-sleep" /etc/ssl/certs/ca-certificates.crt "$ctx/prebuilt/"
image="$REGISTRY/kip-e2e/kubernetes-image-puller:e2e"
log "building $image from the Dockerfile's final stage"
buildah_ bud --quiet --layers=false --build-arg BINARIES=prebuilt \
  --build-arg TARGETPLATFORM="linux/$(go env GOARCH)" -f "$ROOT/Dockerfile" -t "$image" "$ctx" >/dev/null
push "$image"

scratch_image() { # IMAGE ENTRYPOINT-JSON SRC:DEST...
  local image="$1" entrypoint="$2" c
  shift 2
  c="$(buildah_ from scratch)"
  for pair in "$@"; do buildah_ copy --quiet "$c" "${pair%%:*}" "${pair#*:}" >/dev/null; done
  buildah_ config --entrypoint "$entrypoint" --cmd '' "$c"
  buildah_ commit --quiet --rm "$c" "$image" >/dev/null
  push "$image"
}
scratch_image "$REGISTRY/kip-e2e/pause:1" '["/pause"]' "$static_bin/kip-sleep:/pause"
echo "tools" >"$ctx/tools.txt"
scratch_image "$REGISTRY/kip-e2e/busybox:1" '["/bin/busybox"]' "/bin/busybox:/bin/busybox"
scratch_image "$REGISTRY/kip-e2e/tools:1" '["/bin/busybox"]' "/bin/busybox:/bin/busybox" "$ctx/tools.txt:/tools.txt"
echo "$stamp" >"$DIR/images.stamp"
