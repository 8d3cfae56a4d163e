#!/usr/bin/env bash
# Builds a local Debian base image with Python 3.11 for machines that cannot pull the default
# base from a registry. Uses debootstrap against the mirror apt already uses and copies the
# host's CA bundle in, so pip and TLS clients inside the image trust what the host trusts.
set -euo pipefail

TAG="${1:-bigeye-local-base:bookworm}"
SUITE="${BIGEYE_BASE_SUITE:-bookworm}"

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "local base $TAG already present"
  exit 0
fi

mirror="${BIGEYE_DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
  mirror="$(grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)"
fi
if [[ -z "$mirror" ]]; then
  mirror="$(grep -hE '^\s*deb\s' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)"
fi
if [[ -z "$mirror" ]]; then
  echo "build-local-base: no Debian mirror found in apt sources; set BIGEYE_DEBIAN_MIRROR" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  if [[ "$(id -u)" == 0 ]]; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  else
    echo "build-local-base: debootstrap is missing; install it with: sudo apt-get install debootstrap" >&2
    exit 1
  fi
fi

root="$(mktemp -d /tmp/bigeye-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "debootstrap $SUITE from $mirror into $root"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,tini \
  "$SUITE" "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
# python:3.11-slim puts python on /usr/local/bin; link there too so Dockerfiles need not care.
ln -sf /usr/bin/python3 "$root/usr/local/bin/python3"
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
tar -C "$root" -c . | docker import \
  -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'CMD ["/bin/bash"]' - "$TAG" >/dev/null
echo "built local base $TAG"
