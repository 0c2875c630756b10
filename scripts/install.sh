#!/usr/bin/env bash
# Install runnerd into ./.venv and make sure the helper image of ./environments.yaml is present.
#   bash scripts/install.sh            runnerd for operators and users
#   bash scripts/install.sh --dev      plus the test dependencies
# Options: --no-helper-image skips the image step. Needs python3 (3.11+) and Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0; helper=1
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --no-helper-image) helper=0 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# Operators get a plain install (rerun this script after updating the checkout); developers an
# editable one, so that the tests run the code in this folder.
if [ "$dev" = 1 ]; then .venv/bin/pip install --quiet -e '.[test]'; else .venv/bin/pip install --quiet .; fi
echo "installed: $(.venv/bin/runnerd --version) in .venv (run .venv/bin/runnerd, or add .venv/bin to PATH)"

if [ "$helper" = 1 ]; then
  if ! docker info >/dev/null 2>&1; then
    echo "Docker is not reachable: install and start it (apt-get install docker.io), then run this again" >&2
    exit 1
  fi
  image=$(.venv/bin/python -c 'from runnerd.config import load_config; print(load_config("environments.yaml").helperImage)')
  if docker image inspect "$image" >/dev/null 2>&1; then
    echo "helper image $image: present"
  elif docker pull "$image" >/dev/null 2>&1; then
    echo "helper image $image: pulled"
  else
    echo "helper image $image cannot be pulled (no registry?); building a stand-in from Debian's python3"
    bash scripts/images.sh python "$image"
  fi
fi
