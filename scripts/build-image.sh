#!/usr/bin/env bash
# build-image.sh — build the Portcullis container image (Containerfile) without a registry.
#
#   scripts/build-image.sh [TAG...]     default: localhost/portcullis:$VERSION and :latest
#
# Builds the static binary (CGO_ENABLED=0) for this machine's architecture, stages it with the
# CA bundle and the default policy as the build context, and runs `podman build --pull=never`
# (FROM scratch: nothing to pull). Prints the image id on stdout.
#
# Environment: ENGINE (podman, or docker; default podman), VERSION (default: git describe),
# GOARCH (another architecture), CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt).
set -euo pipefail
cd "$(dirname "$0")/.."

engine="${ENGINE:-podman}"
version="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
ca="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
tags=("$@")
((${#tags[@]})) || tags=("localhost/portcullis:${version}" localhost/portcullis:latest)

[[ -s "${ca}" ]] || {
	echo "build-image: no CA bundle at ${ca} (apt-get install ca-certificates, or set CA_BUNDLE)" >&2
	exit 1
}
ctx="$(mktemp -d)"
trap 'rm -rf "${ctx}"' EXIT
CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-X main.version=${version}" -o "${ctx}/portcullis" ./cmd/portcullis
cp "${ca}" "${ctx}/ca-certificates.crt"
cp examples/container/petstore.json "${ctx}/petstore.json"
# Readable by the image's non-root user whatever the umask.
chmod 0555 "${ctx}/portcullis"
chmod 0444 "${ctx}/ca-certificates.crt" "${ctx}/petstore.json"

args=(build -q --build-arg "VERSION=${version}" -f Containerfile)
case "${engine}" in
podman*) args+=(--pull=never) ;;
*) args+=(--pull=false) ;;
esac
for t in "${tags[@]}"; do args+=(-t "${t}"); done
"${engine}" "${args[@]}" "${ctx}"
