#!/usr/bin/env bash
# RabbitMQ with its STOMP plugin on 127.0.0.1, for the STOMP source's tests.
#   scripts/rabbitmq.sh start   install if missing (Debian, as root), start, wait for STOMP
#   scripts/rabbitmq.sh stop    stop the broker and epmd started here
# Ports (override with the environment): STOMP $TF_STOMP_PORT (61623),
# AMQP $TF_AMQP_PORT (5682), epmd $TF_EPMD_PORT (4379), distribution
# $TF_DIST_PORT (25682). State lives in $TF_RABBIT_DIR (/tmp/tenantfusion-rabbitmq).
set -euo pipefail

STOMP_PORT="${TF_STOMP_PORT:-61623}"
AMQP_PORT="${TF_AMQP_PORT:-5682}"
EPMD_PORT="${TF_EPMD_PORT:-4379}"
DIST_PORT="${TF_DIST_PORT:-25682}"
DIR="${TF_RABBIT_DIR:-/tmp/tenantfusion-rabbitmq}"

export RABBITMQ_NODENAME="tenantfusion@localhost"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="$AMQP_PORT"
export RABBITMQ_DIST_PORT="$DIST_PORT"
export ERL_EPMD_ADDRESS=127.0.0.1
export ERL_EPMD_PORT="$EPMD_PORT"
export RABBITMQ_CONFIG_FILE="$DIR/rabbitmq"
export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins"
export RABBITMQ_MNESIA_BASE="$DIR/mnesia"
export RABBITMQ_LOG_BASE="$DIR/log"
export RABBITMQ_PID_FILE="$DIR/rabbitmq.pid"
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"

stomp_up() { (exec 3<>"/dev/tcp/127.0.0.1/$STOMP_PORT") 2>/dev/null; }

install() {
    command -v rabbitmq-server >/dev/null && return
    if [ "$(id -u)" != 0 ]; then
        echo "rabbitmq.sh: rabbitmq-server is not installed and this is not root" >&2
        exit 1
    fi
    echo "rabbitmq.sh: installing rabbitmq-server (about 30 s)" >&2
    # The lock is apt-install.sh's: the server started below does not hold it.
    "$(dirname "$0")/apt-install.sh" rabbitmq-server
    # The package's own service start is refused without systemd; we start it below.
}

start() {
    install
    mkdir -p "$DIR/mnesia" "$DIR/log"
    cat > "$DIR/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$AMQP_PORT
stomp.listeners.tcp.1 = 127.0.0.1:$STOMP_PORT
loopback_users = none
CONF
    rabbitmq-plugins enable --offline rabbitmq_stomp >/dev/null
    # Debian's wrappers run the broker as the `rabbitmq` user.
    if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
        chown -R rabbitmq:rabbitmq "$DIR"
    fi
    if stomp_up; then
        echo "rabbitmq.sh: already up on 127.0.0.1:$STOMP_PORT" >&2
        return
    fi
    rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 1 120); do
        stomp_up && { echo "rabbitmq.sh: STOMP on 127.0.0.1:$STOMP_PORT" >&2; return; }
        sleep 0.5
    done
    echo "rabbitmq.sh: STOMP did not come up; log in $DIR/log" >&2
    exit 1
}

stop() {
    command -v rabbitmqctl >/dev/null || return 0
    rabbitmqctl -q stop >/dev/null 2>&1 || true
    for _ in $(seq 1 40); do
        stomp_up || break
        sleep 0.25
    done
    # epmd refuses to stop while the node is still registered: retry until
    # its port is closed.
    for _ in $(seq 1 40); do
        epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
        (exec 3<>"/dev/tcp/127.0.0.1/$EPMD_PORT") 2>/dev/null || return 0
        sleep 0.25
    done
    echo "rabbitmq.sh: epmd on port $EPMD_PORT did not stop" >&2
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
