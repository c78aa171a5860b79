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
  command -v pkill >/dev/null || missing+=(procps)
  command -v chromium >/dev/null || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "testenv: installing ${missing[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
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
    nohup dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
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

case $cmd in
  up)
    need_packages
    build_rootfs
    hosts=()
    for n in $(seq 1 "${FASTLANE_TEST_ENGINES:-1}"); do hosts+=("$(start_engine "$n")"); done
    {
      echo "export FASTLANE_TEST_DOCKER_HOSTS=$(IFS=,; echo "${hosts[*]}")"
      echo "export FASTLANE_TEST_IMAGE=fastlane-test:1"
      echo "export FASTLANE_TEST_ROOTFS=$state/rootfs.tar"
    } > "$state/env"
    cat "$state/env"
    ;;
  down)
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
