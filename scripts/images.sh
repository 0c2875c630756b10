#!/usr/bin/env bash
# Build small local images without a registry (for offline hosts and the test suite).
#   scripts/images.sh python NAME    Debian bookworm + python3 (mmdebstrap, ~30 s)
#   scripts/images.sh busybox NAME   a static busybox (seconds)
# An image that already exists is left as it is.
set -euo pipefail
kind=${1:?usage: images.sh python|busybox NAME}
name=${2:?usage: images.sh python|busybox NAME}

if docker image inspect "$name" >/dev/null 2>&1; then
  echo "image $name: present"
  exit 0
fi
need() { command -v "$1" >/dev/null 2>&1 || { echo "installing $2 (apt-get)"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case "$kind" in
  python)
    need mmdebstrap mmdebstrap
    echo "building $name from Debian bookworm's python3 (mmdebstrap) ..."
    mmdebstrap --quiet --variant=essential --include=python3,ca-certificates bookworm "$work/rootfs.tar"
    docker import "$work/rootfs.tar" "$name" >/dev/null
    ;;
  busybox)
    need busybox busybox-static
    mkdir -p "$work/root/bin" "$work/root/tmp"
    cp "$(command -v busybox)" "$work/root/bin/busybox"
    for applet in sh ls cat echo sleep true false id ip ps dd head yes; do ln -s busybox "$work/root/bin/$applet"; done
    tar -C "$work/root" -c . | docker import - "$name" >/dev/null
    ;;
  *) echo "unknown kind $kind" >&2; exit 2 ;;
esac
echo "image $name: built"
