#!/usr/bin/env bash
# kafka.sh runs a single-node Apache Kafka 4.x broker (KRaft, combined broker
# and controller) on 127.0.0.1 for end-to-end tests. Needs only a JDK 17+ and
# Maven: the broker's jars are resolved from scripts/kafka/pom.xml into the
# local Maven repository, so only the first start downloads anything.
#
# Usage: scripts/kafka.sh start [--keep-data] | stop | restart [--kill] | down [--kill] | status | env
#
#   start      Start the broker unless it is already running, wait until it
#              answers Kafka requests, print KAFKA_BROKERS=host:port on stdout.
#              A broker that is not running starts on empty storage unless
#              --keep-data is given.
#   stop       Stop the broker (SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT)
#              and delete its data, so the next start is fresh.
#   restart    Stop the broker process and start it again on the same data, to
#              test clients across a broker restart. --kill uses SIGKILL, an
#              unclean crash; the default is a clean SIGTERM shutdown.
#   down       Stop the broker process like restart but leave it down, data
#              kept, for a test of an outage; start --keep-data brings it back.
#   status     Exit 0 if the broker is running, 1 if not.
#   env        Print KAFKA_BROKERS=host:port.
#
# Everything but the KAFKA_BROKERS line goes to stderr, so
# `export ENRICHER_TEST_KAFKA_BROKERS=$(scripts/kafka.sh start | cut -d= -f2)` works.
#
# Besides the plaintext listener, the broker has three secured ones for the
# tests of the clients' security settings:
#   mTLS         SSL, a client certificate required        [KAFKA_PORT+2]
#   SCRAM        SASL_SSL, SCRAM-SHA-256 and SCRAM-SHA-512   [KAFKA_PORT+3]
#   OAUTHBEARER  SASL_PLAINTEXT, unsecured JWTs (alg none)  [KAFKA_PORT+4]
# Their certificates (a CA, the broker's, a client's; PEM) are made with
# openssl in KAFKA_DIR/tls; KAFKA_DIR/security.env lists the addresses, the
# files and the SCRAM user as KEY=VALUE lines.
#
# Environment (defaults in brackets):
#   KAFKA_DIR               state: config, data, logs [<repository>/.kafka]
#   KAFKA_PORT              client listener port [19092]
#   KAFKA_CONTROLLER_PORT   KRaft controller port [19093]
#   KAFKA_VERSION           broker version [the one in scripts/kafka/pom.xml]
#   KAFKA_HEAP_OPTS         JVM heap [-Xms256m -Xmx512m]
#   KAFKA_JVM_OPTS          extra JVM options []
#   KAFKA_START_TIMEOUT     seconds to wait for the broker to answer [90]
#   KAFKA_STOP_TIMEOUT      seconds to wait after SIGTERM before SIGKILL [30]
#   KAFKA_MVN_ARGS          extra Maven arguments, e.g. -Dmaven.repo.local=DIR []
#   JAVA_HOME, MVN          Java installation and Maven command [java on PATH, mvn]

set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
kafka_dir=${KAFKA_DIR:-$repo_root/.kafka}
port=${KAFKA_PORT:-19092}
controller_port=${KAFKA_CONTROLLER_PORT:-19093}
mtls_port=$((port + 2))
scram_port=$((port + 3))
oauth_port=$((port + 4))
scram_user=enricher
scram_password=enricher-scram-secret
host=127.0.0.1
start_timeout=${KAFKA_START_TIMEOUT:-90}
stop_timeout=${KAFKA_STOP_TIMEOUT:-30}
# Option lists are split on whitespace, as documented above.
read -r -a heap_opts <<<"${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
read -r -a jvm_extra <<<"${KAFKA_JVM_OPTS:-}"
read -r -a mvn_extra <<<"${KAFKA_MVN_ARGS:-}"
mvn_cmd=${MVN:-mvn}
if [[ -n ${JAVA_HOME:-} ]]; then
	java_cmd=$JAVA_HOME/bin/java
else
	java_cmd=java
fi

pom=$script_dir/kafka/pom.xml
log4j_config=$script_dir/kafka/log4j2.properties
data_dir=$kafka_dir/data
logs_dir=$kafka_dir/logs
config=$kafka_dir/server.properties
pid_file=$kafka_dir/kafka.pid
brokers_file=$kafka_dir/brokers
classpath_file=$kafka_dir/classpath
classpath_key_file=$kafka_dir/classpath.key
tls_dir=$kafka_dir/tls
security_file=$kafka_dir/security.env

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

# running_pid prints the broker's pid if the pid file names a live process
# that is really a Kafka broker: a pid reused by an unrelated process after a
# crash or reboot must never be signalled.
running_pid() {
	[[ -f $pid_file ]] || return 1
	local pid
	pid=$(<"$pid_file")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' || return 1
	printf '%s\n' "$pid"
}

brokers_line() {
	if running_pid >/dev/null && [[ -s $brokers_file ]]; then
		printf 'KAFKA_BROKERS=%s\n' "$(<"$brokers_file")"
	else
		printf 'KAFKA_BROKERS=%s:%s\n' "$host" "$port"
	fi
}

# classpath prints the broker's runtime classpath. Maven costs a few seconds
# even offline, so the answer is cached and reused while the pom, the version
# and the Maven arguments are unchanged and every jar is still on disk.
classpath() {
	local key cp
	key=$(
		{
			cat "$pom"
			printf '%s\n' "${KAFKA_VERSION:-}" "${KAFKA_MVN_ARGS:-}"
		} | sha256sum | cut -d' ' -f1
	)
	if [[ -s $classpath_file && -f $classpath_key_file && $(<"$classpath_key_file") == "$key" ]]; then
		cp=$(<"$classpath_file")
		local jar ok=1
		IFS=: read -r -a jars <<<"$cp"
		for jar in "${jars[@]}"; do
			[[ -f $jar ]] || {
				ok=0
				break
			}
		done
		if ((ok)); then
			printf '%s\n' "$cp"
			return
		fi
	fi
	command -v "$mvn_cmd" >/dev/null || die "Maven ($mvn_cmd) not found; install Maven or set MVN"
	log "resolving the broker's classpath with Maven (downloads on the first run)"
	local args=(-B -q -f "$pom" -Dstyle.color=never dependency:build-classpath
		"-Dmdep.outputFile=$classpath_file.tmp" -Dmdep.includeScope=runtime)
	[[ -n ${KAFKA_VERSION:-} ]] && args+=("-Dkafka.version=$KAFKA_VERSION")
	args+=("${mvn_extra[@]}")
	if ! "$mvn_cmd" "${args[@]}" >"$kafka_dir/mvn.log" 2>&1; then
		cat "$kafka_dir/mvn.log" >&2
		die "Maven could not resolve the broker's classpath"
	fi
	mv "$classpath_file.tmp" "$classpath_file"
	printf '%s\n' "$key" >"$classpath_key_file"
	cat "$classpath_file"
}

port_in_use() {
	(exec 3<>"/dev/tcp/$host/$1") 2>/dev/null
}

# kafka_call sends one request, given as printf escapes, to the client
# listener and prints the first $2 bytes of the reply as hex. Plain bash and
# coreutils, so the checks below need no JVM start and no Kafka CLI.
kafka_call() {
	# shellcheck disable=SC2016 # the inner script expands its own arguments.
	timeout 3 bash -c '
		exec 3<>"/dev/tcp/$0/$1" || exit 1
		printf "$2" >&3
		head -c "$3" <&3 | od -An -tx1 | tr -d " \n"
	' "$host" "$port" "$1" "$2" 2>/dev/null
}

# Requests carry correlation id 0x4b414654 and a null client id.
#
# answers_kafka sends ApiVersions v0 and checks for error code 0. A listening
# socket alone is not enough: Kafka accepts connections before it can serve.
answers_kafka() {
	local reply
	# size=10, api_key=18, api_version=0
	reply=$(kafka_call '\x00\x00\x00\x0a\x00\x12\x00\x00\x4b\x41\x46\x54\xff\xff' 10) || return 1
	[[ ${reply:8:12} == 4b4146540000 ]]
}

# coordinator_ready sends FindCoordinator v2 for a group. On a fresh broker
# the first such request creates __consumer_offsets and fails with
# COORDINATOR_NOT_AVAILABLE; kafka-go then backs off 5 s before joining its
# group, so start waits here until the coordinator answers instead.
coordinator_ready() {
	local reply
	# size=21, api_key=10, api_version=2, key="kafka.sh", key_type=0 (group)
	reply=$(kafka_call '\x00\x00\x00\x15\x00\x0a\x00\x02\x4b\x41\x46\x54\xff\xff\x00\x08kafka.sh\x00' 14) || return 1
	# correlation id, throttle time, then error code
	[[ ${reply:8:8} == 4b414654 && ${reply:24:4} == 0000 ]]
}

# make_certs writes a CA, the broker's certificate for 127.0.0.1 and a
# client certificate, each key unencrypted PKCS#8, unless they are there.
make_certs() {
	[[ -s $tls_dir/client.pem && -s $tls_dir/broker-keystore.pem ]] && return 0
	command -v openssl >/dev/null || die "openssl not found; it makes the secured listeners' certificates"
	rm -rf "$tls_dir"
	mkdir -p "$tls_dir"
	(
		cd "$tls_dir"
		openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
			-subj "/CN=defender-enricher test CA" -addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign"
		for name in broker client; do
			ext="extendedKeyUsage=clientAuth"
			[[ $name == broker ]] && ext=$'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth'
			openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=$name"
			openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
				-out "$name.pem" -extfile <(printf '%s\n' "$ext")
		done
		cat broker.key broker.pem >broker-keystore.pem
		rm -f ./*.csr ca.srl
	) >"$kafka_dir/openssl.log" 2>&1 || {
		cat "$kafka_dir/openssl.log" >&2
		die "openssl could not make the test certificates"
	}
}

write_security_env() {
	cat >"$security_file" <<EOF
# Written by scripts/kafka.sh start: the secured listeners of the test broker.
MTLS_BROKERS=$host:$mtls_port
SCRAM_BROKERS=$host:$scram_port
OAUTH_BROKERS=$host:$oauth_port
CA_FILE=$tls_dir/ca.pem
CLIENT_CERT_FILE=$tls_dir/client.pem
CLIENT_KEY_FILE=$tls_dir/client.key
SCRAM_USERNAME=$scram_user
SCRAM_PASSWORD=$scram_password
EOF
}

write_config() {
	cat >"$config" <<EOF
# Written by scripts/kafka.sh start; rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$host:$controller_port
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$controller_port,MTLS://$host:$mtls_port,SCRAM://$host:$scram_port,OAUTH://$host:$oauth_port
advertised.listeners=PLAINTEXT://$host:$port,MTLS://$host:$mtls_port,SCRAM://$host:$scram_port,OAUTH://$host:$oauth_port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,MTLS:SSL,SCRAM:SASL_SSL,OAUTH:SASL_PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT

# The secured listeners, for the tests of the clients' TLS and SASL
# settings. PEM files: the broker's key and certificate, and the CA that
# signed every certificate, client ones included.
ssl.keystore.type=PEM
ssl.keystore.location=$tls_dir/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$tls_dir/ca.pem
listener.name.mtls.ssl.client.auth=required
listener.name.scram.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.scram.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.scram.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
# Unsecured JWTs (alg none), validated for their sub and exp claims only:
# what a test can issue without a signing key. Never outside tests.
listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER
listener.name.oauth.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";
log.dirs=$data_dir

# Tests create their topics with explicit partition counts; the default only
# applies to topics auto-created by a producer or consumer.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true

# A single node can only replicate once. Few internal partitions make the
# first consumer group and the first transaction cheap to set up.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# Tests must not wait out the default 3 s before a group's first rebalance.
group.initial.rebalance.delay.ms=0

# The controller fences the broker, this very process, when its heartbeats
# stop for this long; until it unfences a moment later no topic can be
# created and every partition is without a leader. On a loaded 2-core
# machine heartbeats have been late by more than 5 s, so the timeout is
# above the default 9 s. After a SIGKILL the restarted controller refuses
# the broker's new registration until the old incarnation times out, which
# makes restart --kill wait about as long.
broker.session.timeout.ms=15000
broker.heartbeat.interval.ms=1000

num.network.threads=2
num.io.threads=4
log.segment.bytes=16777216
log.retention.hours=24
EOF
}

# launch starts the broker detached (setsid), so it outlives the shell that
# started it and a Ctrl-C there does not reach it.
launch() {
	local cp=$1
	local jvm_opts=(
		"${heap_opts[@]}"
		-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
		"-Dkafka.logs.dir=$logs_dir"
		"-Dlog4j2.configurationFile=$log4j_config"
		"${jvm_extra[@]}"
	)
	mkdir -p "$logs_dir"
	rm -f "$logs_dir"/server.log*
	local starter=()
	command -v setsid >/dev/null && starter=(setsid)
	# The inner shell records its own pid and then becomes the JVM, so the pid
	# file names the broker even when setsid has to fork. Fd 9 is the lock
	# taken in main: a broker inheriting it would hold the lock for its life.
	# shellcheck disable=SC2016 # the inner script expands its own arguments.
	"${starter[@]}" bash -c 'printf "%s\n" "$$" >"$0"; exec "$@"' \
		"$pid_file" "$java_cmd" "${jvm_opts[@]}" -cp "$cp" kafka.Kafka "$config" \
		</dev/null >"$logs_dir/stdout.log" 2>&1 9>&- &
	local deadline=$((SECONDS + 5))
	until [[ -s $pid_file ]]; do
		((SECONDS < deadline)) || die "the broker process did not start"
		sleep 0.05
	done
}

wait_ready() {
	local pid deadline=$((SECONDS + start_timeout))
	pid=$(<"$pid_file")
	while ((SECONDS < deadline)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "the broker exited during startup; last log lines:"
			tail -n 40 "$logs_dir/stdout.log" "$logs_dir/server.log" >&2 2>/dev/null || true
			rm -f "$pid_file"
			exit 1
		fi
		if grep -q 'Kafka Server started' "$logs_dir/server.log" 2>/dev/null &&
			answers_kafka && coordinator_ready; then
			return 0
		fi
		sleep 0.2
	done
	log "the broker did not answer within ${start_timeout}s; last log lines:"
	tail -n 40 "$logs_dir/server.log" >&2 2>/dev/null || true
	stop_process TERM
	exit 1
}

cmd_start() {
	local keep_data=0
	for arg in "$@"; do
		case $arg in
		--keep-data) keep_data=1 ;;
		*) die "start: unknown option $arg" ;;
		esac
	done
	if running_pid >/dev/null; then
		brokers_line
		return 0
	fi
	command -v "$java_cmd" >/dev/null || die "java not found; install a JDK 17+ or set JAVA_HOME"
	local p
	for p in "$port" "$controller_port" "$mtls_port" "$scram_port" "$oauth_port"; do
		port_in_use "$p" && die "port $p on $host is already in use by another process"
	done
	rm -f "$pid_file"
	local cp
	cp=$(classpath)
	make_certs
	write_config
	write_security_env
	if ((!keep_data)) || [[ ! -f $data_dir/meta.properties ]]; then
		rm -rf "$data_dir"
		mkdir -p "$data_dir" "$logs_dir"
		# A cluster id is 16 random bytes in URL-safe base64 without padding;
		# generating it here saves a JVM start over `StorageTool random-uuid`.
		# One starting with "-" would be parsed by StorageTool as an option.
		local cluster_id=-
		while [[ $cluster_id == -* ]]; do
			cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
		done
		# With a static controller.quorum.voters, Kafka 4 formats without
		# --standalone (that flag is for the dynamic-quorum bootstrap.servers form).
		if ! "$java_cmd" "${heap_opts[@]}" "-Dkafka.logs.dir=$logs_dir" \
			"-Dlog4j2.configurationFile=$log4j_config" -cp "$cp" \
			kafka.tools.StorageTool format -t "$cluster_id" -c "$config" \
			--add-scram "SCRAM-SHA-256=[name=$scram_user,password=$scram_password]" \
			--add-scram "SCRAM-SHA-512=[name=$scram_user,password=$scram_password]" \
			>"$logs_dir/format.log" 2>&1; then
			cat "$logs_dir/format.log" >&2
			die "formatting the broker's storage failed"
		fi
	fi
	printf '%s:%s\n' "$host" "$port" >"$brokers_file"
	launch "$cp"
	wait_ready
	log "broker $(<"$brokers_file") is up (pid $(<"$pid_file"), logs in $logs_dir)"
	brokers_line
}

# stop_process ends the broker with the given signal, escalating to SIGKILL
# when a clean shutdown takes longer than KAFKA_STOP_TIMEOUT.
stop_process() {
	local sig=$1 pid
	pid=$(running_pid) || {
		rm -f "$pid_file"
		return 0
	}
	kill "-$sig" "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + stop_timeout))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			log "the broker did not stop within ${stop_timeout}s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			deadline=$((SECONDS + 10))
			sig=KILL
		fi
		sleep 0.1
	done
	rm -f "$pid_file"
}

cmd_stop() {
	stop_process TERM
	rm -rf "$data_dir" "$config" "$brokers_file" "$tls_dir" "$security_file"
	log "stopped; data removed"
}

# kill_signal maps the options of restart and down to a signal.
kill_signal() {
	local sig=TERM
	for arg in "$@"; do
		case $arg in
		--kill) sig=KILL ;;
		*) die "unknown option $arg" ;;
		esac
	done
	printf '%s\n' "$sig"
}

cmd_restart() {
	local sig
	sig=$(kill_signal "$@")
	running_pid >/dev/null || die "restart: the broker is not running"
	stop_process "$sig"
	cmd_start --keep-data
}

cmd_down() {
	local sig
	sig=$(kill_signal "$@")
	running_pid >/dev/null || die "down: the broker is not running"
	stop_process "$sig"
	log "broker stopped with SIG$sig; data kept for start --keep-data"
}

main() {
	local cmd=${1:-}
	[[ $# -gt 0 ]] && shift
	case $cmd in
	start | stop | restart | down) ;;
	status)
		if pid=$(running_pid); then
			log "running (pid $pid)"
			exit 0
		fi
		log "not running"
		exit 1
		;;
	env)
		brokers_line
		exit 0
		;;
	*)
		sed -n '7,33s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
		exit 2
		;;
	esac
	mkdir -p "$kafka_dir"
	# Concurrent start/stop calls (parallel test jobs) must not race on the
	# pid file and the data directory.
	if command -v flock >/dev/null; then
		exec 9>"$kafka_dir/.lock"
		flock 9
	fi
	"cmd_$cmd" "$@"
}

main "$@"
