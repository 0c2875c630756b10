#!/usr/bin/env bash
# A three-node Docker Swarm on this one machine, for runnerd's Swarm backend tests (#17).
#
#   scripts/swarm_lab.sh up       build it (idempotent: a half-built or crashed lab is torn down first)
#   scripts/swarm_lab.sh down     tear it down, also after a crash mid-setup (finds leftovers by name)
#   scripts/swarm_lab.sh status   print what exists; exit 0 only when all three nodes are Ready
#   scripts/swarm_lab.sh restart N   stop node N's dockerd and everything it ran (as after a crash), then
#                                 start it again on its data root: it rejoins the swarm by itself
#
# Layout (everything is named rdlab*, so `down` finds it without any state):
#   - network namespaces rdlab-hub (holds the bridge rdlab0) and rdlab-n1..3 (one dockerd each);
#     the host joins the bridge through the veth rdlab-h at $RDLAB_NET.1, node K is $RDLAB_NET.1K.
#     The bridge lives in its own namespace so that no host iptables rule (FORWARD DROP, Docker's
#     isolation chains, br_netfilter) sees lab traffic, and this script never changes one.
#     No node has a default route: nothing in the lab can send a packet beyond the /24.
#   - each dockerd has its own data root, exec root (and so its own containerd), pid file, unix
#     socket and daemon.json under $RDLAB_DIR/nK, its own cgroup parent /rdlab-nK (the system
#     dockerd uses /docker), its own UTS name rdlab-nK (Swarm's node hostname) and its own mount
#     namespace (its overlay mounts vanish with it, even after a kill -9).
#   - local networks (docker_gwbridge) take 10.233.0.0/16 inside each node, overlays $RDLAB_POOL.
#   - images are copied from the system dockerd with `docker save | docker load`, never pulled;
#     DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 keeps the nodes from trying a registry for a tag.
# The system dockerd (/var/run/docker.sock), docker0 and the host's iptables are never touched.
set -euo pipefail

LAB=${RDLAB_DIR:-/tmp/rdlab}
NET=${RDLAB_NET:-10.231.0}                # the lab's private /24
POOL=${RDLAB_POOL:-10.232.0.0/16}         # where Swarm takes overlay subnets (not the lab /24)
CACHE=${RDLAB_CACHE:-/var/tmp/rdlab-cache} # the saved images, reused while their ids do not change
IMAGES=${RDLAB_IMAGES:-runnerd-test-python:latest runnerd-test-busybox:latest}
NODES=(1 2 3)
HUB=rdlab-hub
declare -A pids
case "$(basename "$LAB")" in rdlab*) ;; *) echo "RDLAB_DIR must end in a folder named rdlab*" >&2; exit 2 ;; esac

log() { printf 'swarm_lab: %s\n' "$*" >&2; }
sock() { echo "$LAB/n$1/docker.sock"; }
dk() { local n=$1; shift; docker --host "unix://$(sock "$n")" "$@"; }

# -- teardown ------------------------------------------------------------------------------------

# Pids of one node's processes: whatever runs in its network namespace (dockerd, containerd, shims)
# and whatever sits in its cgroup parent (containers, which have namespaces of their own).
node_pids() {
  local n=$1
  { ip netns pids "rdlab-n$n" 2>/dev/null || true
    cat /sys/fs/cgroup/pids/rdlab-n"$n"/cgroup.procs /sys/fs/cgroup/pids/rdlab-n"$n"/*/cgroup.procs \
        /sys/fs/cgroup/rdlab-n"$n"/cgroup.procs /sys/fs/cgroup/rdlab-n"$n"/*/cgroup.procs 2>/dev/null || true
  } | sort -un
}

stop_node() {
  local n=$1 pidfile="$LAB/n$1/docker.pid" pid
  if [ -f "$pidfile" ] && pid=$(cat "$pidfile") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
     && grep -qa -- "$LAB/n$n" "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true          # dockerd stops its containers and its containerd
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  local left
  left=$(node_pids "$n")
  if [ -n "$left" ]; then
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    for _ in $(seq 50); do [ -z "$(node_pids "$n")" ] && break; sleep 0.1; done
  fi
  rm -f "$pidfile"                                   # a stale pid file would stop the next dockerd
  local cg
  for cg in /sys/fs/cgroup/*/rdlab-n"$n" /sys/fs/cgroup/rdlab-n"$n"; do
    [ -d "$cg" ] || continue
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

down() {
  local n stops=()
  for n in "${NODES[@]}"; do stop_node "$n" & stops+=($!); done   # in parallel: each may wait 10 s
  for n in "${stops[@]}"; do wait "$n"; done
  for n in "${NODES[@]}"; do ip netns del "rdlab-n$n" 2>/dev/null || true; done
  ip netns del "$HUB" 2>/dev/null || true              # takes the bridge and every veth with it
  ip link del rdlab-h 2>/dev/null || true
  # Mounts under the lab folder can only be left if a dockerd ran in the host's mount namespace
  # (an older lab); unmount them deepest first before removing the folder.
  if [ -d "$LAB" ]; then
    awk -v p="$LAB/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$LAB"
  fi
  log "down"
}

# -- setup ---------------------------------------------------------------------------------------

network() {
  ip netns add "$HUB"
  ip -n "$HUB" link set lo up
  ip -n "$HUB" link add rdlab0 type bridge
  ip -n "$HUB" link set rdlab0 up
  ip link add rdlab-h type veth peer name host netns "$HUB"
  ip -n "$HUB" link set host master rdlab0 up
  ip addr add "$NET.1/24" dev rdlab-h
  ip link set rdlab-h up
  local n
  for n in "${NODES[@]}"; do
    ip netns add "rdlab-n$n"
    ip -n "rdlab-n$n" link set lo up
    ip link add "n$n" netns "$HUB" type veth peer name lab0 netns "rdlab-n$n"
    ip -n "$HUB" link set "n$n" master rdlab0 up
    ip -n "rdlab-n$n" addr add "$NET.1$n/24" dev lab0
    ip -n "rdlab-n$n" link set lab0 up
  done
}

start_node() {
  local n=$1 dir="$LAB/n$1"
  mkdir -p "$dir/data" "$dir/exec" "$dir/cg" "$dir/etc"
  # An /etc/docker of its own: the host's daemon.json never leaks in, and the engine key (the
  # daemon ID) is not the system dockerd's. A resolver on the lab's host address (nothing answers
  # there) rather than the host's nameserver.
  printf '{}\n' >"$dir/etc/daemon.json"
  printf 'nameserver %s.1\n' "$NET" >"$dir/resolv.conf"
  # A private mount namespace with a sysfs of the node's network namespace, keeping the host's
  # cgroup mounts (a plain `ip netns exec` would drop /sys/fs/cgroup with the old sysfs).
  # setsid: the dockerd outlives this script and a Ctrl-C of whoever ran it.
  setsid nsenter --net="/run/netns/rdlab-n$n" -- unshare --mount --uts --propagation slave -- sh -c '
    set -e
    dir=$1; n=$2; shift 2
    hostname "rdlab-n$n"
    mount --rbind /sys/fs/cgroup "$dir/cg"
    mount -t sysfs sysfs /sys
    mount --rbind "$dir/cg" /sys/fs/cgroup
    umount -l "$dir/cg"
    mount --bind "$dir/resolv.conf" /etc/resolv.conf
    if [ -d /etc/docker ]; then mount --bind "$dir/etc" /etc/docker; fi
    exec env DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 "$@"' rdlab "$dir" "$n" \
    dockerd --config-file "$dir/etc/daemon.json" --data-root "$dir/data" --exec-root "$dir/exec" \
      --pidfile "$dir/docker.pid" --host "unix://$dir/docker.sock" --cgroup-parent "/rdlab-n$n" \
      --bridge none --default-address-pool base=10.233.0.0/16,size=24 --userland-proxy=false \
      --no-new-privileges --log-driver json-file \
      --storage-driver overlay2 >"$dir/dockerd.log" 2>&1 </dev/null &
  pids[$n]=$!                                        # nsenter, unshare, sh and env exec: dockerd's pid
}

wait_node() {
  local n=$1
  for _ in $(seq 300); do
    dk "$n" version --format '{{.Server.Version}}' >/dev/null 2>&1 && return 0
    kill -0 "${pids[$n]}" 2>/dev/null || break        # it exited: no use waiting
    sleep 0.2
  done
  log "node $n did not start; its log:"
  tail -20 "$LAB/n$n/dockerd.log" >&2
  return 1
}

images_tar() {
  mkdir -p "$CACHE"
  local key
  # shellcheck disable=SC2086
  key=$(docker image inspect --format '{{.Id}}' $IMAGES | sha256sum | cut -c1-16)
  local tar="$CACHE/images-$key.tar"
  if [ ! -s "$tar" ]; then
    find "$CACHE" -name 'images-*.tar' -delete
    # shellcheck disable=SC2086
    docker save $IMAGES -o "$tar.part" && mv "$tar.part" "$tar"
  fi
  echo "$tar"
}

up() {
  local t0 n tar token
  t0=$(date +%s.%N)
  [ "$(id -u)" = 0 ] || { log "needs root (network namespaces, dockerd)"; exit 1; }
  for cmd in ip nsenter unshare dockerd docker; do
    command -v "$cmd" >/dev/null || { log "missing: $cmd"; exit 1; }
  done
  down 2>/dev/null                                   # whatever a crashed run left
  mkdir -p "$LAB"
  network
  for n in "${NODES[@]}"; do start_node "$n"; done
  tar=$(images_tar)
  for n in "${NODES[@]}"; do wait_node "$n"; done
  local loads=()
  for n in "${NODES[@]}"; do dk "$n" load -q -i "$tar" >/dev/null & loads+=($!); done
  dk 1 swarm init --advertise-addr "$NET.11" --listen-addr "$NET.11:2377" \
     --default-addr-pool "$POOL" --default-addr-pool-mask-length 24 >/dev/null
  token=$(dk 1 swarm join-token -q worker)
  for n in "${NODES[@]:1}"; do
    dk "$n" swarm join --token "$token" --advertise-addr "$NET.1$n" --listen-addr "$NET.1$n:2377" \
       "$NET.11:2377" >/dev/null
  done
  for n in "${loads[@]}"; do wait "$n"; done          # the image loads (not the dockerds)
  for _ in $(seq 150); do ready && break; sleep 0.2; done
  ready || { log "nodes not Ready:"; dk 1 node ls >&2; exit 1; }
  # runnerd's Swarm runtime runs jobs only on nodes labelled swap-free; say so only when true
  if [ "$(awk 'NR > 1' /proc/swaps | wc -l)" = 0 ]; then
    for n in "${NODES[@]}"; do dk 1 node update --label-add runnerd.swap=off "rdlab-n$n" >/dev/null; done
  else
    log "this machine has swap: nodes are not labelled runnerd.swap=off (the Swarm runtime will refuse them)"
  fi
  log "up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')s: manager unix://$(sock 1)"
}

ready() {
  [ "$(dk 1 node ls --format '{{.Status}}' 2>/dev/null | grep -c '^Ready$')" = "${#NODES[@]}" ]
}

status() {
  local n rc=0
  for n in "${NODES[@]}"; do
    if [ -S "$(sock "$n")" ] && dk "$n" version --format '{{.Server.Version}}' >/dev/null 2>&1; then
      echo "node $n: dockerd up at unix://$(sock "$n") ($NET.1$n)"
    else
      echo "node $n: down"; rc=1
    fi
  done
  if [ $rc = 0 ]; then dk 1 node ls; ready || rc=1; fi
  ip netns list | grep -q '^rdlab-' && echo "namespaces: $(ip netns list | grep -o '^rdlab-[a-z0-9]*' | xargs)"
  return $rc
}

restart() {
  local n=$1
  case "$n" in 1|2|3) ;; *) log "restart: a node number 1-3"; exit 2 ;; esac
  stop_node "$n"
  start_node "$n"
  wait_node "$n"
  for _ in $(seq 300); do ready && break; sleep 0.2; done
  ready || { log "node $n did not rejoin:"; dk 1 node ls >&2; exit 1; }
  log "node $n restarted"
}

case "${1:-}" in
  up) up ;;
  restart) restart "${2:-}" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status|restart N   (RDLAB_DIR=$LAB, RDLAB_NET=$NET.0/24)" >&2; exit 2 ;;
esac
