#!/usr/bin/env bash
# container-engine.sh — a container engine for Portcullis's tests and images, without a registry.
#
# Installs podman (Debian's packages), applies the settings these machines need, starts podman's
# Docker-compatible API (testcontainers-go talks to it) and builds, from Debian and Maven Central
# alone, the two images the tests run:
#
#   localhost/debian-jre:bookworm   a minimal Debian with OpenJDK 17 (debootstrap)
#   localhost/keycloak:<version>    Keycloak, augmented at build time (`kc.sh build`), started
#                                   with `start --optimized`: ready about twice as fast as start-dev
#
# Idempotent: a package, setting, API service or image that is already there is kept. Prints the
# time each step takes on stderr, and on stdout the environment the tests need, as `export` lines:
#
#   eval "$(scripts/container-engine.sh)"
#
# Run as root (it installs packages and writes /etc/containers). Environment:
#   KEYCLOAK_VERSION              Keycloak version (default 26.5.6)
#   PORTCULLIS_CACHE              the Keycloak zip's cache (default $HOME/.cache/portcullis)
#   PORTCULLIS_CONTAINER_CACHE    the base rootfs's cache (default $HOME/.cache/portcullis-containers)
#   DEBIAN_MIRROR                 mirror for debootstrap (default: the first of the apt sources)
set -euo pipefail
cd "$(dirname "$0")/.."

version="${KEYCLOAK_VERSION:-26.5.6}"
ccache="${PORTCULLIS_CONTAINER_CACHE:-${HOME}/.cache/portcullis-containers}"
socket=/run/podman/podman.sock
jre_image=localhost/debian-jre:bookworm
kc_image="localhost/keycloak:${version}"

log() { echo "container-engine: $*" >&2; }
step_start=0
step() { step_start=$(date +%s); log "$*"; }
step_done() { log "  done in $(($(date +%s) - step_start)) s${1:+ ($1)}"; }

if [[ $(id -u) -ne 0 ]]; then
	log "run as root: it installs packages and writes /etc/containers/containers.conf.d"
	exit 1
fi
mkdir -p "${ccache}"

# 1. Packages.
step "packages: podman runc debootstrap unzip"
missing=()
for p in podman runc debootstrap unzip; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	step_done "installed ${missing[*]}"
else
	step_done "already installed"
fi

# 2. Settings (see the note in the README's "Containers" section):
#  - root here lacks CAP_SYS_RESOURCE, so podman's default rlimits cannot be set
#    ("setrlimit RLIMIT_NOFILE: Operation not permitted"): ask for what the hard limit allows;
#  - crun refuses this kernel's hybrid cgroup layout: runc, with cgroupfs (no systemd here);
#  - the journald events logger needs systemd: a file.
step "settings: /etc/containers/containers.conf.d/50-portcullis.conf"
nofile="$(ulimit -Hn)"
[[ "${nofile}" == unlimited ]] && nofile=1048576
conf_dir=/etc/containers/containers.conf.d
conf="${conf_dir}/50-portcullis.conf"
want="# Written by portcullis scripts/container-engine.sh.
[containers]
default_ulimits = [\"nofile=${nofile}:${nofile}\", \"nproc=32768:32768\"]

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
"
if [[ -f "${conf}" && "$(cat "${conf}")" == "$(printf '%s' "${want}")" ]]; then
	step_done "unchanged"
else
	mkdir -p "${conf_dir}"
	printf '%s' "${want}" >"${conf}"
	step_done "written"
fi
runtime="$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null || true)"
if [[ "${runtime}" != runc ]]; then
	log "podman does not use the settings of ${conf} (runtime: ${runtime:-unknown})"
	exit 1
fi

# 3. The Docker-compatible API, once: a second service on the same socket would fight the first.
ping() { curl -sf --max-time 3 --unix-socket "${socket}" http://d/_ping >/dev/null 2>&1; }
step "API: podman system service on unix://${socket}"
if ping; then
	step_done "already running"
else
	mkdir -p "$(dirname "${socket}")"
	# setsid: the service outlives this script and the CI step that ran it. From /: conmon, which
	# it starts for each container, needs its working directory, and a checkout may be deleted
	# while the service runs on ("Failed to get working directory", then "write child: broken
	# pipe" for every container start).
	(cd / && exec setsid podman system service --time=0 "unix://${socket}" >>"${ccache}/podman-service.log" 2>&1 </dev/null) &
	for _ in $(seq 1 100); do
		ping && break
		sleep 0.1
	done
	if ! ping; then
		log "the API did not answer; ${ccache}/podman-service.log:"
		tail -n 20 "${ccache}/podman-service.log" >&2 || true
		exit 1
	fi
	step_done "started, pid $!"
fi

# 4. The JRE base image: debootstrap once, the rootfs kept as a tarball in the cache.
step "image ${jre_image}"
if podman image exists "${jre_image}"; then
	step_done "already built"
else
	tarball="${ccache}/debian-jre-bookworm.tar"
	if [[ ! -s "${tarball}" ]]; then
		mirror="${DEBIAN_MIRROR:-}"
		if [[ -z "${mirror}" ]]; then
			mirror="$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
				head -n1 | tr -d ' ' || true)"
		fi
		mirror="${mirror:-http://deb.debian.org/debian}"
		rootfs="$(mktemp -d "${ccache}/rootfs.XXXXXX")"
		trap 'rm -rf "${rootfs}"' EXIT
		log "  debootstrap bookworm from ${mirror}"
		debootstrap --variant=minbase --include=openjdk-17-jre-headless bookworm "${rootfs}" "${mirror}" \
			>"${ccache}/debootstrap.log" 2>&1 || {
			tail -n 20 "${ccache}/debootstrap.log" >&2
			exit 1
		}
		# Package caches and lists are not needed to run Java.
		rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/lib/apt/lists/*
		tar -C "${rootfs}" -cf "${tarball}.part" .
		mv "${tarball}.part" "${tarball}"
		rm -rf "${rootfs}"
		trap - EXIT
	fi
	podman import -q --change 'CMD ["/bin/bash"]' "${tarball}" "${jre_image}" >/dev/null
	step_done "$(du -h "${tarball}" | cut -f1) rootfs"
fi

# 5. Keycloak from the Maven Central distribution.
step "image ${kc_image}"
if podman image exists "${kc_image}"; then
	step_done "already built"
else
	zip="${PORTCULLIS_CACHE:-${HOME}/.cache/portcullis}/keycloak-quarkus-dist-${version}.zip"
	if [[ ! -s "${zip}" ]]; then
		KEYCLOAK_VERSION="${version}" bash scripts/fetch-keycloak.sh >/dev/null
	fi
	ctx="$(mktemp -d "${ccache}/keycloak-build.XXXXXX")"
	trap 'rm -rf "${ctx}"' EXIT
	unzip -q "${zip}" -d "${ctx}"
	mv "${ctx}/keycloak-${version}" "${ctx}/keycloak"
	cp scripts/keycloak.Containerfile "${ctx}/Containerfile"
	podman build --pull=never -q -t "${kc_image}" "${ctx}" >/dev/null
	rm -rf "${ctx}"
	trap - EXIT
	# The build stage's layers are not needed once the image exists.
	podman image prune -f >/dev/null
	step_done
fi

cat <<EOF
export DOCKER_HOST=unix://${socket}
export TESTCONTAINERS_RYUK_DISABLED=true
export TESTCONTAINERS_HOST_OVERRIDE=localhost
EOF
