#!/usr/bin/env bash
# Builds the project's images, tagged :dev and :<version> (design §6, §10).
# Usage: deploy/build-images.sh [IMAGE...]   (default: every image below)
# Each Dockerfile starts with `ARG BASE_IMAGE=<default>`. When that default base can be neither
# found locally nor pulled, the image is built from the local base made by base/build-local-base.sh.
set -euo pipefail

cd "$(dirname "$0")/.."

LOCAL_BASE="bigeye-local-base:bookworm"
PULL_TIMEOUT="${BIGEYE_PULL_TIMEOUT:-20}"

# One line per image: name, Dockerfile, build context (paths from the repository root).
IMAGES=(
  "bigeye-demo-agent deploy/demo-agent/Dockerfile deploy/demo-agent"
  "bigeyedata/agent-orchestrator Dockerfile ."
  "bigeyedata/agent-docker-socket-proxy deploy/socket-proxy/Dockerfile deploy/socket-proxy"
)

die() { echo "build-images: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info failed); is dockerd running and DOCKER_HOST right?"
if ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0  # no buildx plugin: the classic builder
fi

version="$(sed -nE 's/^version *= *"([^"]+)".*/\1/p' pyproject.toml | head -n1)"
[[ -n "$version" ]] || die "no version = line in pyproject.toml"

# Prints the base to build from: the Dockerfile's default when present or pullable, else the
# local base (built on first use).
choose_base() {
  local dockerfile="$1" default
  default="$(sed -nE '1,/^FROM/ s/^ARG BASE_IMAGE=(.+)$/\1/p' "$dockerfile" | head -n1)"
  [[ -n "$default" ]] || die "$dockerfile has no ARG BASE_IMAGE=<default> line before FROM"
  if docker image inspect "$default" >/dev/null 2>&1 \
    || timeout "$PULL_TIMEOUT" docker pull -q "$default" >/dev/null 2>&1; then
    echo "$default"
    return
  fi
  echo "build-images: $default is not available; using local base $LOCAL_BASE" >&2
  bash deploy/base/build-local-base.sh "$LOCAL_BASE" >&2
  echo "$LOCAL_BASE"
}

wanted=("$@")
for arg in "${wanted[@]}"; do
  printf '%s\n' "${IMAGES[@]}" | cut -d' ' -f1 | grep -qxF -- "$arg" || die "unknown image: $arg"
done

built=()
for line in "${IMAGES[@]}"; do
  read -r name dockerfile context <<<"$line"
  if (( ${#wanted[@]} )) && ! printf '%s\n' "${wanted[@]}" | grep -qxF -- "$name"; then
    continue
  fi
  if [[ ! -f "$dockerfile" ]]; then
    echo "build-images: skipping $name: $dockerfile does not exist yet"
    continue
  fi
  base="$(choose_base "$dockerfile")"
  echo "build-images: building $name:dev and $name:$version from $base"
  docker build --build-arg "BASE_IMAGE=$base" -f "$dockerfile" \
    -t "$name:dev" -t "$name:$version" "$context"
  built+=("$name")
done

for name in ${built[@]+"${built[@]}"}; do
  size="$(docker image inspect -f '{{.Size}}' "$name:dev")"
  awk -v n="$name:dev" -v s="$size" 'BEGIN { printf "%-50s %8.1f MB\n", n, s / 1000000 }'
done
