#!/usr/bin/env bash
# redis.sh runs a Redis server of its own on 127.0.0.1 for the tests: not
# the system's service, no persistence, its data and pid under the
# repository. Installs Debian's redis-server package with apt-get when
# redis-server is missing.
#
# Usage: scripts/redis.sh start | stop | status | env
#
#   start      Start the server unless it is already running, wait until it
#              answers PING, print REDIS_URL=redis://127.0.0.1:PORT/0 on stdout.
#   stop       Stop the server (SIGTERM, then SIGKILL after REDIS_STOP_TIMEOUT)
#              and delete its directory's state.
#   status     Exit 0 if the server is running, 1 if not.
#   env        Print REDIS_URL=redis://127.0.0.1:PORT/0.
#
# Everything but the REDIS_URL line goes to stderr, so
# `export ENRICHER_TEST_REDIS_URL=$(scripts/redis.sh start | cut -d= -f2)` works.
#
# Environment (defaults in brackets):
#   REDIS_DIR            state: config, pid, log [<repository>/.redis]
#   REDIS_PORT           port [a free one, chosen at start]
#   REDIS_START_TIMEOUT  seconds to wait for PING to answer [30]
#   REDIS_STOP_TIMEOUT   seconds to wait after SIGTERM before SIGKILL [10]

set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
redis_dir=${REDIS_DIR:-$repo_root/.redis}
host=127.0.0.1
start_timeout=${REDIS_START_TIMEOUT:-30}
stop_timeout=${REDIS_STOP_TIMEOUT:-10}
pid_file=$redis_dir/redis.pid
port_file=$redis_dir/port
log_file=$redis_dir/redis.log

log() { printf 'redis.sh: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

# running_pid prints the server's pid if the pid file names a live
# redis-server: a pid reused by another process must never be signalled.
running_pid() {
	[[ -f $pid_file ]] || return 1
	local pid
	pid=$(<"$pid_file")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'redis-server' || return 1
	printf '%s\n' "$pid"
}

url_line() {
	local port=${REDIS_PORT:-6379}
	[[ -s $port_file ]] && port=$(<"$port_file")
	printf 'REDIS_URL=redis://%s:%s/0\n' "$host" "$port"
}

port_in_use() {
	(exec 3<>"/dev/tcp/$host/$1") 2>/dev/null
}

# free_port prints a port nothing listens on, from the ephemeral range's
# neighbourhood, avoiding Redis's and Kafka's defaults.
free_port() {
	local p tries=0
	while ((tries < 200)); do
		p=$((20000 + RANDOM % 20000))
		tries=$((tries + 1))
		port_in_use "$p" || {
			printf '%s\n' "$p"
			return 0
		}
	done
	die "no free port found on $host"
}

# answers_ping sends PING in the inline protocol and waits for +PONG.
answers_ping() {
	local reply
	# shellcheck disable=SC2016 # the inner script expands its own arguments.
	reply=$(timeout 3 bash -c '
		exec 3<>"/dev/tcp/$0/$1" || exit 1
		printf "PING\r\n" >&3
		head -c 7 <&3
	' "$host" "$1" 2>/dev/null) || return 1
	[[ $reply == +PONG* ]]
}

ensure_installed() {
	command -v redis-server >/dev/null && return 0
	command -v apt-get >/dev/null || die "redis-server not found and apt-get missing: install Redis 6.2 or later"
	log "installing Debian's redis-server package"
	local sudo=()
	((EUID == 0)) || sudo=(sudo)
	if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >"$redis_dir/apt.log" 2>&1; then
		"${sudo[@]}" apt-get update >>"$redis_dir/apt.log" 2>&1 || true
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >>"$redis_dir/apt.log" 2>&1 ||
			{
				cat "$redis_dir/apt.log" >&2
				die "apt-get could not install redis-server"
			}
	fi
	command -v redis-server >/dev/null || die "redis-server still not found after installing it"
}

cmd_start() {
	if running_pid >/dev/null; then
		url_line
		return 0
	fi
	ensure_installed
	local port=${REDIS_PORT:-}
	if [[ -z $port ]]; then
		port=$(free_port)
	elif port_in_use "$port"; then
		die "port $port on $host is already in use by another process"
	fi
	rm -f "$pid_file" "$log_file"
	printf '%s\n' "$port" >"$port_file"
	# No persistence, no protected-mode surprises on loopback, a directory
	# of our own for anything the server writes.
	redis-server --bind "$host" --port "$port" --save '' --appendonly no \
		--dir "$redis_dir" --pidfile "$pid_file" --logfile "$log_file" \
		--daemonize yes --protected-mode yes >/dev/null 9>&- ||
		die "redis-server did not start; see $log_file"
	local deadline=$((SECONDS + start_timeout))
	until answers_ping "$port"; do
		if ((SECONDS >= deadline)); then
			tail -n 20 "$log_file" >&2 2>/dev/null || true
			die "redis-server did not answer PING within ${start_timeout}s"
		fi
		sleep 0.1
	done
	local pid
	pid=$(running_pid) || die "redis-server answers but its pid file is missing; see $log_file"
	log "redis-server on $host:$port is up (pid $pid, log in $log_file)"
	url_line
}

cmd_stop() {
	local pid
	if pid=$(running_pid); then
		kill -TERM "$pid" 2>/dev/null || true
		local deadline=$((SECONDS + stop_timeout))
		while kill -0 "$pid" 2>/dev/null; do
			if ((SECONDS >= deadline)); then
				log "redis-server did not stop within ${stop_timeout}s; sending SIGKILL"
				kill -KILL "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.1
		done
	fi
	rm -f "$pid_file" "$port_file" "$redis_dir"/*.rdb
	log "stopped"
}

main() {
	local cmd=${1:-}
	case $cmd in
	start | stop) ;;
	status)
		if pid=$(running_pid); then
			log "running (pid $pid)"
			exit 0
		fi
		log "not running"
		exit 1
		;;
	env)
		url_line
		exit 0
		;;
	*)
		sed -n '7,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
		exit 2
		;;
	esac
	mkdir -p "$redis_dir"
	if command -v flock >/dev/null; then
		exec 9>"$redis_dir/.lock"
		flock 9
	fi
	"cmd_$cmd"
}

main "$@"
