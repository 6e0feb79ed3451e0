#!/usr/bin/env bash
# Sourced by serve.sh and test.sh: installs what roomrelay needs, idempotently and quickly.
#   ensure_python [EXTRAS]   .venv with roomrelay installed (pip, editable), e.g. "test"
#   ensure_node_modules      npm packages from package-lock.json (socket.io-client)
#   ensure_debian PKG...     Debian packages, only those whose command is missing
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

log() { printf '[roomrelay setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian package -> a command it provides, to tell whether it is already installed.
debian_command() {
  case "$1" in
    chromium) echo chromium ;;
    espeak-ng) echo espeak-ng ;;
    sox) echo sox ;;
    nodejs) echo node ;;
    npm) echo npm ;;
    python3-venv) echo "" ;;
    simple-whip-client) echo whip-client ;;
    gstreamer1.0-*) echo "" ;;
    *) echo "$1" ;;
  esac
}

ensure_debian() {
  local missing=()
  for package in "$@"; do
    local command_name
    command_name="$(debian_command "$package")"
    if [ -n "$command_name" ] && command -v "$command_name" >/dev/null 2>&1; then continue; fi
    if [ -z "$command_name" ] && dpkg -s "$package" >/dev/null 2>&1; then continue; fi
    missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

find_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return
    fi
  done
  log "Python 3.11 or newer is required"
  return 1
}

ensure_python() {
  local extras="${1:-}"
  local spec="$ROOT"
  [ -n "$extras" ] && spec="$ROOT[$extras]"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment in .venv"
    "$(find_python)" -m venv "$VENV" || {
      ensure_debian python3-venv
      "$(find_python)" -m venv "$VENV"
    }
  fi
  local stamp="$VENV/.roomrelay-${extras:-base}.stamp"
  local wanted
  wanted="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    log "installing Python packages (${extras:-runtime})"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec"
    echo "$wanted" >"$stamp"
  fi
}

ensure_node_modules() {
  command -v npm >/dev/null 2>&1 || ensure_debian nodejs npm
  local stamp="$ROOT/node_modules/.roomrelay.stamp"
  local wanted
  wanted="$(sha256sum "$ROOT/package-lock.json" | cut -c1-16)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    log "installing npm packages"
    (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$wanted" >"$stamp"
  fi
}
