#!/usr/bin/env bash
# Benchmarks of fastlane-node; results and method in BENCHMARKS.md.
#   scripts/bench.sh latency [N]          N trivial jobs (default 100), POST -> done, vs `docker run --rm`
#   scripts/bench.sh cron [N] [FIRING]    N cron jobs (default 100000): memory, idle CPU, firing lag
#   scripts/bench.sh enqueue [N] [C]      N scheduled jobs (default 50000) posted with C in flight
#                                         (default 64): embedded, then Redis + MongoDB (SecantusDB)
#   scripts/bench.sh memory [SECONDS] [N]  a chatty job watched by 50 joining/leaving WebSockets
#                                         and 20 readers of N (default 4) 200 MB stored outputs
#                                         for SECONDS (default 60): peak RSS, trivial job time.
#                                         FASTLANE_BENCH_ENV=FILE uses that test environment
#   scripts/bench.sh backlog [N] [SECONDS] the node draining N waiting trivial jobs (default
#                                         100000) on one engine at maxRunning 4, against ~100
#                                         waiting and 4-way `docker run --rm`, over windows of
#                                         SECONDS (default 60): embedded, then Redis + SecantusDB
#                                         (FASTLANE_BENCH_BACKENDS="embedded redis"); with an
#                                         engine run with --debug (FASTLANE_TEST_DOCKERD_DEBUG=1,
#                                         the default here) slot-to-start is split node/engine
#   scripts/bench.sh concurrency [N]      N (default 200) `sleep 900` jobs running at once on two
#                                         engines: time until all run, RSS and CPU per execution
#   scripts/bench.sh blocked [N] [SECONDS] N (default 5000) jobs behind a full pool (maxConcurrent 1):
#                                         the node's CPU while they wait, over SECONDS (default 60)
#   scripts/bench.sh backlog-queue [N,N…] the queue alone: its cost per started job with N waiting
#                                         (default 100,10000,100000): embedded before/after its
#                                         lease indexes, then Redis
#   FASTLANE_BENCH_ENV=FILE: a running test environment's env file (backlog, concurrency, memory);
#   FASTLANE_BENCH_PROFILE=debug: the debug build (backlog, concurrency, memory)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-latency}
state=$(mktemp -d /tmp/fastlane-bench.XXXXXX)
node_pid=
cleanup() {
  if [ -n "$node_pid" ]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
  scripts/testenv.sh down "$state" || true
  rm -rf "$state" 2>/dev/null || true
}
trap cleanup EXIT

start_node() { # $1 = DOCKER_HOSTS value; extra environment (REDIS_URL=…) before the call
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  DATA_DIR="${BENCH_DATA_DIR:-$state/data-$RANDOM}" RUST_LOG="${BENCH_RUST_LOG:-warn}" DOCKER_HOSTS="$1" \
    "target/${profile:-release}/fastlane-node" start -b 127.0.0.1 -p "$port" 2>"${BENCH_NODE_LOG:-$state/node.log}" &
  node_pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthcheck" >/dev/null && break; sleep 0.1; done
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
}

case $mode in
  latency)
    count=${2:-100}
    scripts/testenv.sh up "$state" >/dev/null
    # shellcheck disable=SC1091
    source "$state/env"
    cargo build --release --quiet --bin fastlane-node --example bench_latency
    start_node "[{\"match\": \"\", \"hosts\": [\"$FASTLANE_TEST_DOCKER_HOSTS\"], \"maxRunning\": 4}]"
    echo "docker $(docker -H "tcp://$FASTLANE_TEST_DOCKER_HOSTS" version --format '{{.Server.Version}}')"
    target/release/examples/bench_latency "http://127.0.0.1:$port" "$FASTLANE_TEST_DOCKER_HOSTS" "$FASTLANE_TEST_IMAGE" "$count"
    ;;
  cron)
    total=${2:-100000}
    firing=${3:-1000}
    cargo build --release --quiet --bin fastlane-node --example bench_cron
    # No Docker needed: the firing jobs' executions expire before they would run.
    start_node '[{"match": "", "hosts": ["127.0.0.1:9"], "maxRunning": 10}]'
    target/release/examples/bench_cron "http://127.0.0.1:$port" "$node_pid" "$total" "$firing"
    ;;
  enqueue)
    total=${2:-50000}
    concurrency=${3:-64}
    cargo build --release --quiet --bin fastlane-node --example bench_enqueue
    # No Docker needed: the jobs start in an hour.
    farm='[{"match": "", "hosts": ["127.0.0.1:9"], "maxRunning": 10}]'
    echo "== embedded store and queue"
    start_node "$farm"
    target/release/examples/bench_enqueue "http://127.0.0.1:$port" "$total" "$concurrency" "node=$node_pid"
    kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=
    FASTLANE_TEST_ENGINES=0 scripts/testenv.sh up "$state" >/dev/null
    # shellcheck disable=SC1091
    source "$state/env"
    echo "== Redis $(redis-server --version | grep -o 'v=[0-9.]*') + SecantusDB $(secantusd-rs --version 2>/dev/null | head -1)"
    REDIS_URL=$FASTLANE_TEST_REDIS_URL MONGODB_URL=$FASTLANE_TEST_SECANTUS_URL start_node "$farm"
    target/release/examples/bench_enqueue "http://127.0.0.1:$port" "$total" "$concurrency" \
      "node=$node_pid" "redis=$(cat "$state/redis/pid")" "secantusdb=$(cat "$state/secantus/pid")"
    if [ -n "${FASTLANE_BENCH_MONGODB_URL:-}" ]; then
      kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=
      echo "== Redis + MongoDB at FASTLANE_BENCH_MONGODB_URL"
      REDIS_URL=$FASTLANE_TEST_REDIS_URL MONGODB_URL=$FASTLANE_BENCH_MONGODB_URL start_node "$farm"
      target/release/examples/bench_enqueue "http://127.0.0.1:$port" "$total" "$concurrency" \
        "node=$node_pid" "redis=$(cat "$state/redis/pid")"
    fi
    ;;
  backlog|concurrency)
    if [ -n "${FASTLANE_BENCH_ENV:-}" ]; then
      # shellcheck disable=SC1090
      source "$FASTLANE_BENCH_ENV"
    else
      FASTLANE_TEST_DOCKERD_DEBUG=1 FASTLANE_TEST_ENGINES=2 scripts/testenv.sh up "$state" >/dev/null
      # shellcheck disable=SC1091
      source "$state/env"
    fi
    profile=${FASTLANE_BENCH_PROFILE:-release}
    if [ "$profile" = release ]; then
      cargo build --release --quiet --bin fastlane-node --example bench_node
    else
      cargo build --quiet --bin fastlane-node --example bench_node
    fi
    engine=${FASTLANE_TEST_DOCKER_HOSTS%%,*}
    second=${FASTLANE_TEST_DOCKER_HOSTS##*,}
    # This benchmark's containers only (a test environment may be shared): by deployment id.
    export DEPLOYMENT_ID=bench-node-$RANDOM
    remove_containers() {
      for host in "$engine" "$second"; do
        docker -H "tcp://$host" ps -aq --filter "label=fastlane.deployment_id=$DEPLOYMENT_ID" |
          xargs -r docker -H "tcp://$host" rm -f >/dev/null 2>&1 || true
      done
    }
    echo "docker $(docker -H "tcp://$engine" version --format '{{.Server.Version}}'), $profile build, load $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ "$mode" = backlog ]; then
      count=${2:-100000}
      seconds=${3:-60}
      for backend in ${FASTLANE_BENCH_BACKENDS:-embedded redis}; do
        echo "== $backend"
        farm="[{\"match\": \"\", \"hosts\": [\"$engine\"], \"maxRunning\": 4}]"
        if [ "$backend" = embedded ]; then
          start_node "$farm"
        else
          REDIS_URL=$FASTLANE_TEST_REDIS_URL MONGODB_URL="${FASTLANE_TEST_SECANTUS_URL%/*}/bench$RANDOM" \
            REDIS_KEY_PREFIX=bench$RANDOM start_node "$farm"
        fi
        # With an engine started with --debug, slot-to-start is split between node and engine.
        FASTLANE_BENCH_ENGINE_LOG=${FASTLANE_TEST_ENGINE_LOG:-} \
          "target/$profile/examples/bench_node" drain "http://127.0.0.1:$port" "$node_pid" "$engine" \
          "$FASTLANE_TEST_IMAGE" "$count" "$seconds"
        kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=
        remove_containers
      done
    else
      count=${2:-200}
      farm="[{\"match\": \"\", \"hosts\": [\"$engine\", \"$second\"], \"maxRunning\": $count}]"
      start_node "$farm"
      "target/$profile/examples/bench_node" concurrency "http://127.0.0.1:$port" "$node_pid" \
        "$FASTLANE_TEST_IMAGE" "$count"
      kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=
      remove_containers
    fi
    ;;
  backlog-queue)
    sizes=${2:-100,10000,100000}
    cargo build --release --quiet --example bench_backlog
    echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    target/release/examples/bench_backlog "$sizes" embedded-before
    target/release/examples/bench_backlog "$sizes" embedded
    FASTLANE_TEST_ENGINES=0 scripts/testenv.sh up "$state" >/dev/null
    # shellcheck disable=SC1091
    source "$state/env"
    echo "Redis $(redis-server --version | grep -o 'v=[0-9.]*')"
    target/release/examples/bench_backlog "$sizes" "$FASTLANE_TEST_REDIS_URL"
    ;;
  memory)
    seconds=${2:-60}
    count=${3:-4}
    if [ -n "${FASTLANE_BENCH_ENV:-}" ]; then
      # shellcheck disable=SC1090
      source "$FASTLANE_BENCH_ENV"
    else
      scripts/testenv.sh up "$state" >/dev/null
      # shellcheck disable=SC1091
      source "$state/env"
    fi
    # FASTLANE_BENCH_PROFILE=debug: the debug build, when there is no time for a release one.
    profile=${FASTLANE_BENCH_PROFILE:-release}
    if [ "$profile" = release ]; then
      cargo build --release --quiet --bin fastlane-node --example bench_memory
    else
      cargo build --quiet --bin fastlane-node --example bench_memory
    fi
    engine=${FASTLANE_TEST_DOCKER_HOSTS%%,*}
    farm="[{\"match\": \"\", \"hosts\": [\"$engine\"], \"maxRunning\": 8}]"
    export BENCH_DATA_DIR="$state/data-memory"
    start_node "$farm"
    target/$profile/examples/bench_memory seed "http://127.0.0.1:$port" "$FASTLANE_TEST_IMAGE" "$count" "$state/large"
    kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=
    target/$profile/examples/bench_memory grow "$BENCH_DATA_DIR/fastlane.sqlite3" 200000000 "$state/large"
    # A fresh process, so that VmHWM counts only the load below.
    start_node "$farm"
    target/$profile/examples/bench_memory run "http://127.0.0.1:$port" "$node_pid" "$FASTLANE_TEST_IMAGE" "$state/large" "$seconds" "$engine"
    ;;
  blocked)
    count=${2:-5000}
    seconds=${3:-60}
    if [ -n "${FASTLANE_BENCH_ENV:-}" ]; then
      # shellcheck disable=SC1090
      source "$FASTLANE_BENCH_ENV"
    else
      scripts/testenv.sh up "$state" >/dev/null
      # shellcheck disable=SC1091
      source "$state/env"
    fi
    profile=${FASTLANE_BENCH_PROFILE:-release}
    if [ "$profile" = release ]; then
      cargo build --release --quiet --bin fastlane-node
    else
      cargo build --quiet --bin fastlane-node
    fi
    engine=${FASTLANE_TEST_DOCKER_HOSTS%%,*}
    start_node "[{\"match\": \"\", \"hosts\": [\"$engine\"], \"maxRunning\": 4}]"
    python3 scripts/bench_blocked.py "http://127.0.0.1:$port" "$node_pid" "$FASTLANE_TEST_IMAGE" "$count" "$seconds"
    kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=
    docker -H "tcp://$engine" ps -q --filter label=fastlane.task_id=bench-blocked | xargs -r docker -H "tcp://$engine" rm -f >/dev/null || true
    ;;
  *) echo "usage: scripts/bench.sh latency [N] | cron [N] [FIRING] | enqueue [N] [C] | memory [SECONDS] [N] | backlog [N] [SECONDS] | concurrency [N] | blocked [N] [SECONDS] | backlog-queue [N,N…]" >&2; exit 2 ;;
esac
