#!/usr/bin/env bash
# fetch-keycloak.sh — install the Keycloak distribution used by the integration tests.
#
# Downloads org.keycloak:keycloak-quarkus-dist:<version>:zip from Maven Central (through mvn, the
# ordinary client), unpacks it into a cache folder outside the repository and runs Quarkus'
# augmentation once, so that every later `kc.sh start-dev` of a copy starts in seconds.
# Idempotent: an existing, complete installation is reused. Prints the installation path (and
# nothing else) on stdout; progress goes to stderr.
#
# Environment:
#   KEYCLOAK_VERSION   version to install (default 26.5.6)
#   PORTCULLIS_CACHE   cache folder (default $HOME/.cache/portcullis)
#   KC_JAVA_HOME       Java to run Keycloak with (default: picked from /usr/lib/jvm, 21 then 17)
set -euo pipefail

version="${KEYCLOAK_VERSION:-26.5.6}"
cache="${PORTCULLIS_CACHE:-${HOME}/.cache/portcullis}"
dest="${cache}/keycloak-${version}"
marker="${dest}/.portcullis-ready"

log() { echo "fetch-keycloak: $*" >&2; }

if [[ -f "${marker}" ]]; then
	echo "${dest}"
	exit 0
fi

# pick_java prints a JAVA_HOME whose major version Keycloak 26 supports (21 preferred, then 17).
pick_java() {
	if [[ -n "${KC_JAVA_HOME:-}" ]]; then
		echo "${KC_JAVA_HOME}"
		return
	fi
	local want home v
	for want in 21 17; do
		for home in /usr/lib/jvm/*; do
			[[ -x "${home}/bin/java" ]] || continue
			v="$("${home}/bin/java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
			if [[ "${v}" == "${want}" ]]; then
				echo "${home}"
				return
			fi
		done
	done
	if [[ -n "${JAVA_HOME:-}" ]]; then
		echo "${JAVA_HOME}"
	fi
}

command -v mvn >/dev/null || {
	log "mvn is required (apt-get install maven)"
	exit 1
}
command -v unzip >/dev/null || {
	log "unzip is required (apt-get install unzip)"
	exit 1
}

mkdir -p "${cache}"
# Test binaries running in parallel may all find the installation missing: one installs, the
# others wait and reuse it.
exec 9>"${cache}/.fetch-keycloak.lock"
flock 9
if [[ -f "${marker}" ]]; then
	echo "${dest}"
	exit 0
fi
work="$(mktemp -d "${cache}/.fetch-keycloak.XXXXXX")"
pid=""
cleanup() {
	if [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null; then
		kill -TERM -- "-${pid}" 2>/dev/null || true
		wait "${pid}" 2>/dev/null || true
	fi
	rm -rf "${work}"
}
trap cleanup EXIT

zip="${cache}/keycloak-quarkus-dist-${version}.zip"
if [[ ! -s "${zip}" ]]; then
	log "downloading org.keycloak:keycloak-quarkus-dist:${version}:zip"
	mvn -q -B dependency:copy \
		"-Dartifact=org.keycloak:keycloak-quarkus-dist:${version}:zip" \
		"-DoutputDirectory=${work}/dl" >&2
	mv "${work}/dl/keycloak-quarkus-dist-${version}.zip" "${zip}"
fi

log "unpacking ${zip}"
unzip -q "${zip}" -d "${work}/unpacked"
home="${work}/unpacked/keycloak-${version}"
[[ -x "${home}/bin/kc.sh" ]] || {
	log "unexpected archive layout: no keycloak-${version}/bin/kc.sh"
	exit 1
}

# Augmentation runs on the first start-dev; do it here once so the tests do not pay it each time.
java_home="$(pick_java)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18089)"
mport="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 19089)"
log "pre-building (start-dev once on 127.0.0.1:${port}, java: ${java_home:-default})"
# Job control gives the background job its own process group, so the whole tree (kc.sh and its
# java) can be stopped through the group id.
set -m
(
	cd "${home}"
	if [[ -n "${java_home}" ]]; then export JAVA_HOME="${java_home}"; fi
	export KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD=admin
	exec bin/kc.sh start-dev --http-host=127.0.0.1 "--http-port=${port}" "--http-management-port=${mport}" \
		>"${work}/prebuild.log" 2>&1
) &
pid=$!
set +m
ready=""
for _ in $(seq 1 300); do
	if curl -sf "http://127.0.0.1:${port}/realms/master/.well-known/openid-configuration" >/dev/null 2>&1; then
		ready=1
		break
	fi
	kill -0 "${pid}" 2>/dev/null || break
	sleep 1
done
if [[ -z "${ready}" ]]; then
	log "Keycloak did not start; its log:"
	tail -n 40 "${work}/prebuild.log" >&2 || true
	exit 1
fi
kill -TERM -- "-${pid}" 2>/dev/null || true
wait "${pid}" 2>/dev/null || true
pid=""

# The pre-build's database and logs must not leak into test runs.
rm -rf "${home}/data"
mkdir -p "${home}/data/import"
touch "${home}/.portcullis-ready"
rm -rf "${dest}"
mv "${home}" "${dest}"
log "installed ${dest}"
echo "${dest}"
