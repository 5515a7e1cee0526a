# Shared by scripts/test and scripts/demo: make sure the local services answer on 127.0.0.1,
# installing them from Debian's packages (or npm, for dynalite) when absent, and remember what
# this run started so it can stop exactly that.
# shellcheck shell=bash

STARTED=()
TOOLS_DIR="${TOOLS_DIR:-$(pwd)/.tools}"

log() { printf '[services] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 what=$2 tries=${3:-100}
  for _ in $(seq "$tries"); do
    port_open "$port" && return 0
    sleep 0.2
  done
  log "$what did not open port $port"; return 1
}

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

ensure_redis() {
  if port_open 6379; then log "redis: already running"; return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379 redis
  STARTED+=(redis)
  log "redis: started"
}

ensure_rabbitmq() {
  if port_open 5672; then log "rabbitmq: already running"; return; fi
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1
  rabbitmq-server -detached
  rabbitmqctl await_startup >/dev/null
  wait_port 5672 rabbitmq
  STARTED+=(rabbitmq)
  log "rabbitmq: started"
}

# Starts dynalite (a DynamoDB-compatible server with atomic conditional writes) on a free port
# and exports WORLDLAND_TEST_DYNAMODB_ENDPOINT.
start_dynalite() {
  local cli="$TOOLS_DIR/node_modules/dynalite/cli.js"
  if [ ! -f "$cli" ]; then
    command -v npm >/dev/null || apt_install nodejs npm
    log "dynalite: installing into $TOOLS_DIR"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS_DIR" dynalite@3.2.2 >&2
  fi
  local port=${DYNALITE_PORT:-4567}
  while port_open "$port"; do port=$((port + 1)); done
  node "$cli" --port "$port" --host 127.0.0.1 --createTableMs 0 --deleteTableMs 0 --updateTableMs 0 \
    >"$TOOLS_DIR/dynalite.log" 2>&1 &
  DYNALITE_PID=$!
  wait_port "$port" dynalite
  STARTED+=(dynalite)
  export WORLDLAND_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$port"
  log "dynalite: started on $WORLDLAND_TEST_DYNAMODB_ENDPOINT"
}

stop_started() {
  for s in "${STARTED[@]}"; do
    case $s in
      dynalite) kill "$DYNALITE_PID" 2>/dev/null || true ;;
      moto) kill "$MOTO_PID" 2>/dev/null || true ;;
      redis) redis-cli -h 127.0.0.1 -p 6379 shutdown nosave >/dev/null 2>&1 || true ;;
      rabbitmq) rabbitmqctl stop >/dev/null 2>&1 || true ;;
    esac
    log "$s: stopped"
  done
}

# Starts moto's server (SQS only is used: stock moto is fine for SQS, not for DynamoDB races) on a
# free port, from a virtualenv in .tools, and exports WORLDLAND_TEST_SQS_ENDPOINT.
start_moto() {
  local venv="$TOOLS_DIR/venv"
  if [ ! -x "$venv/bin/moto_server" ]; then
    log "moto: installing into $venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==5.2.5" >&2
  fi
  local port=${MOTO_PORT:-5123}
  while port_open "$port"; do port=$((port + 1)); done
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$TOOLS_DIR/moto.log" 2>&1 &
  MOTO_PID=$!
  wait_port "$port" moto 150
  STARTED+=(moto)
  export WORLDLAND_TEST_SQS_ENDPOINT="http://127.0.0.1:$port"
  log "moto: started on $WORLDLAND_TEST_SQS_ENDPOINT"
}

# Checks the SAM / CloudFormation template with cfn-lint (PyPI), in the same virtualenv.
lint_template() {
  local venv="$TOOLS_DIR/venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  [ -x "$venv/bin/cfn-lint" ] || "$venv/bin/pip" install --quiet --disable-pip-version-check "cfn-lint==1.58.0" >&2
  "$venv/bin/cfn-lint" infra/template.yaml
  log "cfn-lint: infra/template.yaml is clean"
}

# cargo-lambda (PyPI) for the Lambda tests: `cargo lambda watch` on 127.0.0.1 runs the real
# bootstrap binaries under its emulator.
ensure_cargo_lambda() {
  local venv="$TOOLS_DIR/venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  [ -x "$venv/bin/cargo-lambda" ] || "$venv/bin/pip" install --quiet --disable-pip-version-check "cargo-lambda==1.9.2" >&2
  export WORLDLAND_TEST_CARGO_LAMBDA_DIR="$venv/bin"
  log "cargo-lambda: $("$venv/bin/cargo-lambda" lambda --version 2>/dev/null || echo installed)"
}
