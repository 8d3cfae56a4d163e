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
  "bigeyedata/agent-docker-socket-proxy deploy/socket-proxy/Dockerfile ."
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

# Images built from the repository root install the project from wheels in .wheels/ (docker
# builds here have no network): the project's own wheel and every runtime dependency, for the
# images' Python and this engine's architecture, whatever Python the host runs.
IMAGE_PYTHON="3.11"
wheels_ready=""
PIP_PYTHON=".venv/bin/python"
[[ -x "$PIP_PYTHON" ]] || PIP_PYTHON="python3"
quiet_pip() {  # pip's output only when it fails
  local out status=0
  out="$("$PIP_PYTHON" -m pip -q "$@" 2>&1)" || status=$?
  (( status == 0 )) || grep -v "is ignored" <<<"$out" >&2
  return "$status"
}
fill_wheels() {
  [[ -z "$wheels_ready" ]] || return 0
  local py="$PIP_PYTHON" arch platforms=() deps=() minor
  arch="$(docker info -f '{{.Architecture}}')"
  case "$arch" in amd64) arch=x86_64 ;; arm64) arch=aarch64 ;; esac
  platforms=(--platform "manylinux2014_$arch")
  for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
  mapfile -t deps < <("$py" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
  echo "build-images: filling .wheels/ (the project and its dependencies, Python $IMAGE_PYTHON, $arch)"
  mkdir -p .wheels
  rm -f .wheels/bigeye_agent_orchestrator-*.whl
  quiet_pip wheel --no-deps --wheel-dir .wheels . || die "pip wheel of the project failed"
  quiet_pip download --dest .wheels --only-binary=:all: --python-version "$IMAGE_PYTHON" \
    --implementation cp "${platforms[@]}" "${deps[@]}" \
    || die "pip download of the runtime dependencies failed (is PyPI reachable?)"
  "$py" deploy/slim_wheels.py .wheels || die "slimming the wheels in .wheels/ failed"
  wheels_ready=1
}

revision="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
# The moving tag a release line is pulled by (compose files name it): 1 for 1.x.y, 0.1 for 0.1.y.
IFS=. read -r major minor _ <<<"$version"
if [[ "$major" == 0 ]]; then channel="0.$minor"; else channel="$major"; fi
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
  [[ "$context" != "." ]] || fill_wheels
  echo "build-images: building $name:dev, $name:$version and $name:$channel from $base"
  docker build --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" -f "$dockerfile" \
    -t "$name:dev" -t "$name:$version" -t "$name:$channel" "$context"
  built+=("$name")
done

for name in ${built[@]+"${built[@]}"}; do
  size="$(docker image inspect -f '{{.Size}}' "$name:dev")"
  awk -v n="$name:dev" -v s="$size" 'BEGIN { printf "%-50s %8.1f MB\n", n, s / 1000000 }'
done
