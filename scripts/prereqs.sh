#!/usr/bin/env bash
# System prerequisites of `make demo` and `make test`, checked before anything is installed into .venv.
#
#   scripts/prereqs.sh            check; install what is missing with apt-get (Debian/Ubuntu, as root)
#   PREREQS=check scripts/prereqs.sh   check only: never install, stop if something is missing
#
# What is needed, and why:
#   Python 3.11 exactly ($PYTHON, else python3.11, else python3)  the lock is resolved for 3.11
#   venv + ensurepip for it (Debian: python3.11-venv)             make setup creates .venv
#   Java 17 or newer (openjdk-17-jre-headless)                    TorchServe's frontend
#   chromium                                                      tests render the report headless
#   a Compose implementation (docker compose v2 or docker-compose) tests validate docker-compose.yml
#   openssl                                                       tests make TLS certificates for the drop-in
#
# apt-get runs with --no-install-recommends (Debian's docker-compose would recommend a whole Docker engine).
# Where something is missing and cannot be installed here, it stops (exit 2) with one line naming
# the packages and the command that installs them. Nothing is installed when everything is present.
set -euo pipefail

PYTHON_GIVEN="${PYTHON:-}"
MODE="${PREREQS:-install}"

missing_names=()     # what a user reads
missing_packages=()  # what apt-get installs

say() { echo "prereqs: $*"; }

python_version() { "$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null; }

java_major() {
  # `java -version` prints e.g. 'openjdk version "17.0.15"' or, before Java 9, 'java version "1.8.0_402"'.
  local version
  version=$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)
  version=${version#1.}
  echo "${version%%[.+_-]*}"
}

compose_version() {
  if docker compose version >/dev/null 2>&1; then
    docker compose version --short 2>/dev/null | sed 's/^/docker compose /'
  elif command -v docker-compose >/dev/null 2>&1; then
    docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /'
  fi
}

apt_has() { apt-cache show "$1" >/dev/null 2>&1; }

# The first of several packages that this machine's apt sources offer (Java's name moves with releases).
first_apt_package() {
  local package
  for package in "$@"; do
    if apt_has "$package"; then echo "$package"; return; fi
  done
  echo "$1"
}

need() { missing_names+=("$1"); missing_packages+=("$2"); }

check_all() {
  missing_names=(); missing_packages=()
  # as the Makefile picks it: python3.11 where it exists (perhaps installed a moment ago), else python3
  PYTHON="${PYTHON_GIVEN:-$(command -v python3.11 || echo python3)}"
  local version major
  version=$(python_version || true)
  if [[ -z "$version" ]]; then
    need "Python 3.11 ($PYTHON not found)" python3.11
  elif [[ "$version" != 3.11.* ]]; then
    need "Python 3.11 ($PYTHON is $version; set PYTHON=python3.11)" python3.11
  elif ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need "venv for $PYTHON" python3.11-venv
  fi
  major=$(java_major 2>/dev/null || true)
  if ! command -v java >/dev/null 2>&1 || [[ -z "$major" ]] || (( major < 17 )); then
    need "Java 17 or newer${major:+ (found $major)}" "$(first_apt_package openjdk-17-jre-headless openjdk-21-jre-headless)"
  fi
  # fonts-liberation: without any font the headless page renders text as nothing (installed without recommends)
  command -v chromium >/dev/null 2>&1 || need chromium "chromium fonts-liberation"
  [[ -n "$(compose_version)" ]] || need "a Compose implementation" docker-compose
  command -v openssl >/dev/null 2>&1 || need openssl openssl
}

report_present() {
  say "Python $(python_version) ($PYTHON), Java $(java_major), $(chromium --version 2>/dev/null | head -n 1)," \
      "$(compose_version), $(openssl version 2>/dev/null | cut -d' ' -f1-2): all present"
}

install_command() {
  if [[ "$(uname -s)" == Darwin ]]; then
    echo "brew install python@3.11 openjdk@17 docker-compose openssl && brew install --cask chromium"
  else
    local sudo="sudo "
    [[ "$(id -u)" == 0 ]] && sudo=""
    echo "${sudo}apt-get install -y --no-install-recommends ${missing_packages[*]}"
  fi
}

stop_missing() {
  local names
  names=$(IFS=,; echo "${missing_names[*]}" | sed 's/,/, /g')
  say "missing: $names; install with: $(install_command)" >&2
  exit 2
}

check_all
if (( ${#missing_names[@]} == 0 )); then
  [[ -n "${PREREQS_QUIET:-}" ]] || report_present  # make demo's stages check again, quietly
  exit 0
fi
if [[ "$MODE" == check || "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  stop_missing
fi

packages="${missing_packages[*]}"
say "installing ${packages// /, } for: $(IFS=,; echo "${missing_names[*]}" | sed 's/,/, /g')"
say "running: apt-get update && apt-get install -y --no-install-recommends $packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086  # one word per package
apt-get install -y -q --no-install-recommends $packages

check_all
if (( ${#missing_names[@]} > 0 )); then
  stop_missing
fi
report_present
