#!/usr/bin/env bash
# Provisions the private test environment of fastlane-node on a Debian machine and prints the
# variables that describe it (source-able). Idempotent per state dir.
#
#   scripts/testenv.sh up   STATE_DIR   # install packages, start dockerd(s), build test image
#   scripts/testenv.sh down STATE_DIR   # stop what `up` started
#
# Engines: FASTLANE_TEST_ENGINES (default 1) private dockerd processes, each on a free loopback
# port, with its own data/exec root under STATE_DIR. The test image `fastlane-test:1` (busybox
# applets + bash) is built with `docker import` on every engine: no registry is needed.
#
# Backends (unless FASTLANE_TEST_BACKENDS=0): a Redis with persistence (appendonly), a Sentinel
# topology (primary, replica, three sentinels watching `fastlane`), a Redis Cluster (three
# primaries) and SecantusDB, a MongoDB-wire-compatible server (`cargo install`ed once, ~6 min),
# each on free loopback ports under STATE_DIR.
set -euo pipefail

cmd=${1:?usage: testenv.sh up|down STATE_DIR}
state=${2:?usage: testenv.sh up|down STATE_DIR}
mkdir -p "$state"
state=$(cd "$state" && pwd)

need_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  command -v python3 >/dev/null || missing+=(python3)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  command -v pkill >/dev/null || missing+=(procps)
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v htpasswd >/dev/null || missing+=(apache2-utils)
  if [ "${FASTLANE_TEST_BACKENDS:-1}" != 0 ]; then
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
    command -v secantusd-rs >/dev/null || command -v cmake >/dev/null || missing+=(cmake)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "testenv: installing ${missing[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# A free port P whose cluster bus port P+10000 is free too (Redis Cluster needs P <= 55535).
free_cluster_port() {
  python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randint(20000, 45000)
    if free(p) and free(p + 10000):
        print(p); break
PY
}

build_rootfs() {
  local root=$state/rootfs
  [ -f "$state/rootfs.tar" ] && return 0
  rm -rf "$root"; mkdir -p "$root"/{bin,usr/bin,lib,lib64,tmp,etc,proc,sys,dev}
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
  # bash and the libraries it links, at the same paths.
  rm -f "$root/bin/bash"; cp /bin/bash "$root/bin/bash"
  for lib in $(ldd /bin/bash | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
  tar -C "$root" -cf "$state/rootfs.tar" .
}

start_engine() {
  local n=$1 dir=$state/engine$1 port
  mkdir -p "$dir"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    port=$(cat "$dir/port")
  else
    port=$(free_port)
    echo "$port" > "$dir/port"
    # Each engine gets its own containerd socket dir through --exec-root.
    # FASTLANE_TEST_DOCKERD_DEBUG=1: one log line per API call (the backlog benchmark's split).
    nohup dockerd ${FASTLANE_TEST_DOCKERD_DEBUG:+--debug} --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
      -H "tcp://127.0.0.1:$port" --data-root "$dir/data" --exec-root "$dir/exec" \
      --pidfile "$dir/pid" >"$dir/dockerd.log" 2>&1 &
    for _ in $(seq 1 150); do
      docker -H "tcp://127.0.0.1:$port" version >/dev/null 2>&1 && break
      sleep 0.2
    done
    docker -H "tcp://127.0.0.1:$port" version >/dev/null 2>&1 || {
      echo "testenv: dockerd $n did not start; log:" >&2; tail -30 "$dir/dockerd.log" >&2; exit 1; }
  fi
  if ! docker -H "tcp://127.0.0.1:$port" image inspect fastlane-test:1 >/dev/null 2>&1; then
    docker -H "tcp://127.0.0.1:$port" import "$state/rootfs.tar" fastlane-test:1 >/dev/null
  fi
  echo "127.0.0.1:$port"
}

wait_redis() {
  for _ in $(seq 1 100); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "testenv: redis on port $1 did not start; log:" >&2
  tail -5 "$2" >&2 2>/dev/null || true
  exit 1
}

# start_redis NAME [extra redis-server args…]: a redis-server in STATE_DIR/NAME; prints its port.
start_redis() {
  local name=$1 dir=$state/$1 port; shift
  mkdir -p "$dir"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then cat "$dir/port"; return; fi
  # A new port each start: what an earlier run left (a cluster's peers at their old ports, a
  # replica's primary) would only get in the way.
  rm -rf "${dir:?}"/nodes.conf "${dir:?}"/appendonlydir "${dir:?}"/*.aof
  case " $* " in
    *" --cluster-enabled yes "*) port=$(free_cluster_port) ;;
    *) port=$(free_port) ;;
  esac
  echo "$port" > "$dir/port"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
    --pidfile "$dir/pid" --logfile "$dir/redis.log" --save '' --appendonly yes "$@" >&2
  wait_redis "$port" "$dir/redis.log"
  echo "$port"
}

start_backends() {
  local standalone primary replica s cluster_ports=() sentinels=()
  standalone=$(start_redis redis)
  primary=$(start_redis sentinel-primary)
  replica=$(start_redis sentinel-replica --replicaof 127.0.0.1 "$primary")
  for n in 1 2 3; do
    local dir=$state/sentinel$n
    mkdir -p "$dir"
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      s=$(cat "$dir/port")
    else
      s=$(free_port); echo "$s" > "$dir/port"
      cat > "$dir/sentinel.conf" <<CONF
port $s
bind 127.0.0.1
daemonize yes
pidfile $dir/pid
logfile $dir/sentinel.log
dir $dir
sentinel monitor fastlane 127.0.0.1 $primary 2
sentinel down-after-milliseconds fastlane 2000
sentinel failover-timeout fastlane 10000
CONF
      redis-sentinel "$dir/sentinel.conf" >&2
      wait_redis "$s" "$dir/sentinel.log"
    fi
    sentinels+=("127.0.0.1:$s")
  done
  for n in 1 2 3; do
    cluster_ports+=("$(start_redis "cluster$n" --cluster-enabled yes \
      --cluster-config-file "$state/cluster$n/nodes.conf" --cluster-node-timeout 3000)")
  done
  if ! redis-cli -p "${cluster_ports[0]}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cluster_ports[@]}") \
      --cluster-replicas 0 --cluster-yes >"$state/cluster1/create.log" 2>&1
    for _ in $(seq 1 100); do
      redis-cli -p "${cluster_ports[0]}" cluster info | grep -q 'cluster_state:ok' && break
      sleep 0.1
    done
    if ! redis-cli -p "${cluster_ports[0]}" cluster info | grep -q 'cluster_state:ok'; then
      echo "testenv: the Redis cluster did not form:" >&2
      cat "$state/cluster1/create.log" >&2
      exit 1
    fi
  fi
  local mongo dir=$state/secantus
  if ! command -v secantusd-rs >/dev/null; then
    echo "testenv: building SecantusDB (MongoDB-compatible test server), once per machine" >&2
    cargo install secantus-mdb --version 0.5.3-beta.196 --locked --ignore-rust-version >&2
  fi
  mkdir -p "$dir/data"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    mongo=$(cat "$dir/port")
  else
    mongo=$(free_port); echo "$mongo" > "$dir/port"
    nohup secantusd-rs --host 127.0.0.1 --port "$mongo" --storage-path "$dir/data" \
      >"$dir/secantus.log" 2>&1 &
    echo $! > "$dir/pid"
    for _ in $(seq 1 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$mongo") 2>/dev/null && break
      sleep 0.1
    done
  fi
  echo "export FASTLANE_TEST_REDIS_URL=redis://127.0.0.1:$standalone/0"
  echo "export FASTLANE_TEST_REDIS_DIR=$state/redis"
  echo "export FASTLANE_TEST_REDIS_SENTINEL_URL=redis+sentinel://$(IFS=,; echo "${sentinels[*]}")/fastlane/0"
  echo "export FASTLANE_TEST_REDIS_CLUSTER_URL=redis+cluster://$(printf '127.0.0.1:%s,' "${cluster_ports[@]}" | sed 's/,$//')"
  echo "export FASTLANE_TEST_SECANTUS_URL=mongodb://127.0.0.1:$mongo/fastlane"
}

case $cmd in
  up)
    need_packages
    build_rootfs
    hosts=()
    for n in $(seq 1 "${FASTLANE_TEST_ENGINES:-1}"); do hosts+=("$(start_engine "$n")"); done
    {
      echo "export FASTLANE_TEST_DOCKER_HOSTS=$(IFS=,; echo "${hosts[*]}")"
      echo "export FASTLANE_TEST_IMAGE=fastlane-test:1"
      echo "export FASTLANE_TEST_ENGINE_LOG=$state/engine1/dockerd.log"
      echo "export FASTLANE_TEST_ROOTFS=$state/rootfs.tar"
      if [ "${FASTLANE_TEST_BACKENDS:-1}" != 0 ]; then start_backends; fi
    } > "$state/env"
    cat "$state/env"
    ;;
  down)
    for pidfile in "$state"/{redis,sentinel*,cluster*,secantus}/pid; do
      [ -f "$pidfile" ] || continue
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    done
    for pidfile in "$state"/engine*/pid; do
      [ -f "$pidfile" ] || continue
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    done
    ;;
  *) echo "usage: testenv.sh up|down STATE_DIR" >&2; exit 2 ;;
esac
