#!/usr/bin/env bash
# Register gVisor's runsc with the running dockerd as the OCI runtime `runsc`, without restarting
# it: the runtime is added to /etc/docker/daemon.json (other keys kept) and dockerd is sent SIGHUP,
# which reloads `runtimes` (moby daemon/reload_unix.go) and leaves running containers alone.
# Idempotent: nothing is written and no signal sent when dockerd already lists the runtime with the
# same arguments. Installs Debian's `runsc` package when it is missing.
#
#   bash scripts/runsc.sh [--platform ptrace|kvm|auto]   (default auto: kvm where /dev/kvm works)
#
# runtimeArgs: --network=none (the job's containers get no network from runnerd unless an
# environment allows it; gVisor then skips its network stack, see docs/operator-guide.md) and
# the platform. ptrace works on any VM; kvm needs /dev/kvm (nested virtualisation on a VM).
set -euo pipefail
platform=auto
[ "${1:-}" = "--platform" ] && platform=${2:?--platform needs ptrace, kvm or auto}
conf=${RUNNERD_DOCKER_CONFIG:-/etc/docker/daemon.json}
name=${RUNNERD_RUNSC_NAME:-runsc}

if ! command -v runsc >/dev/null; then
  echo "installing: runsc"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runsc >/dev/null
fi
runsc_path=$(command -v runsc)

if [ "$platform" = auto ]; then
  platform=ptrace
  # kvm only where the device opens and runsc can start a sandbox with it (nested KVM may be
  # present yet refuse); `runsc do` is the cheapest real try (well under a second where kvm works; bounded at 5 s where it hangs).
  if [ -r /dev/kvm ] && [ -w /dev/kvm ] &&
     timeout 5 "$runsc_path" --platform=kvm --network=none do true >/dev/null 2>&1; then
    platform=kvm
  fi
fi
args=("--network=none" "--platform=$platform")

want=$(python3 - "$name" "$runsc_path" "${args[@]}" <<'EOF'
import json, sys
name, path, *args = sys.argv[1:]
print(json.dumps({"path": path, "runtimeArgs": args}, sort_keys=True))
EOF
)
have=$(docker info --format "{{json .Runtimes}}" 2>/dev/null | python3 -c '
import json, sys
rt = (json.load(sys.stdin) or {}).get(sys.argv[1])
print(json.dumps({"path": rt.get("path"), "runtimeArgs": rt.get("runtimeArgs") or []}, sort_keys=True) if rt else "")
' "$name")
if [ "$have" = "$want" ]; then
  echo "dockerd already has runtime $name: $want"
  exit 0
fi

# Merge into daemon.json: every other key stays; a file that is not a JSON object is not touched.
mkdir -p "$(dirname "$conf")"
python3 - "$conf" "$name" "$want" <<'EOF'
import json, os, sys
conf, name, want = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
try:
    with open(conf, encoding="utf-8") as f:
        data = json.load(f)
except FileNotFoundError:
    data = {}
if not isinstance(data, dict):
    sys.exit(f"{conf} is not a JSON object: not changed")
data.setdefault("runtimes", {})[name] = want
tmp = conf + ".runnerd-tmp"
with open(tmp, "w", encoding="utf-8") as f:
    json.dump(data, f, indent=2)
    f.write("\n")
os.replace(tmp, conf)  # dockerd never reads half a file
EOF

pid=$(cat /var/run/docker.pid 2>/dev/null || true)
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
  echo "no running dockerd (/var/run/docker.pid): $conf has runtime $name for its next start"
  exit 0
fi
kill -HUP "$pid"  # reload, not restart: running containers are untouched
for _ in $(seq 20); do
  now=$(docker info --format "{{json .Runtimes}}" 2>/dev/null || true)
  case "$now" in *"\"$name\""*) echo "dockerd (pid $pid) reloaded: runtime $name = $want"; exit 0 ;; esac
  sleep 0.5
done
echo "dockerd did not pick up runtime $name after SIGHUP (see its log)" >&2
exit 1
