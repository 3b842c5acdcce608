#!/usr/bin/env bash
# Load comparison: Portcullis against nginx and HAProxy doing the same job, on a machine with 2
# cores.
#
# Usage: benches/load/compare.sh [--rounds N] [--duration S] [--quick] [--binary PATH]
#                                [--work DIR] [--idle-conns N] [--only LIST] [--quiet-wait S]
#                                [--routes N] [--certs N]
#
#   --rounds N      rounds per scenario; each round runs Portcullis, nginx, then HAProxy (default 3)
#   --duration S    seconds per load run (default 10)
#   --quick         1 round of 5 s per scenario: a few minutes in all
#   --binary PATH   Portcullis binary (default target/release/portcullis); it is copied into the
#                   work directory first, so a rebuild during the run changes nothing
#   --work DIR      scratch directory, emptied first (default /tmp/portcullis-compare)
#   --idle-conns N  connections for the idle-memory scenario (default 10000)
#   --only LIST     comma-separated subset of: h1,h2,16k,handshake,redirect,idle,idle_h2
#   --quiet-wait S  before each run, wait up to S seconds for both cores to be idle (default 300)
#   --routes N      give Portcullis's config N routes in all (scale_config.py: extra hosts that
#                   no client asks for), to see whether a request costs more in a larger table
#   --certs N       likewise, N certificates in all (needs python3's cryptography package)
#
# Needs: nginx, haproxy, wrk, h2load (nghttp2-client), openssl, curl, python3, taskset, and a C
# compiler (cc) for the full-handshake scenario, which is skipped without one. Everything listens
# on 127.0.0.1 only; the system nginx and HAProxy configurations are never read or touched (own
# prefix or config file, own pid, socket and log files under the work directory).
#
# Layout: the proxy under test (one worker or thread) runs on core 0; the load generator and the
# upstream (another nginx) share core 1. A figure only measures the proxy if the proxy's core was
# busy during the run, so every run records the proxy's CPU use (from /proc/PID/stat) and core
# 1's (from /proc/stat), and the table flags runs where the proxy had idle time left.
#
# Other work on the machine (a compile, say) would be measured as slowness of whichever side it
# shares a core with: each run first waits until both cores are idle, measures how much CPU went
# to anything but the proxy, the load generator and the upstream, and is run again (up to 3
# attempts) when that exceeds 10% of a core.
#
# Every run is checked: wrk's and h2load's own error counters must be zero, and the proxy's
# access log must show only the expected status (200, or 301 on the plain listener), apart from
# requests in flight when the load generator stops; in the handshake runs, nginx's and HAProxy's
# logs must show no resumed TLS session.
#
# The table gives each proxy's median, Portcullis's ratio to the best of its peers (nginx and
# HAProxy: the higher figure for throughput, the lower for latency and memory) and to nginx.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

ROUNDS=3
DURATION=10
BINARY="$REPO/target/release/portcullis"
WORK=/tmp/portcullis-compare
IDLE_CONNS=10000
ROUTES=0
CERTS=0
QUIET_WAIT=300
ALL_SCENARIOS=(h1 h2 16k handshake redirect idle idle_h2)
SCENARIOS=("${ALL_SCENARIOS[@]}")

PROXY_CORE=0
LOAD_CORE=1
PROXIES=(portcullis nginx haproxy)
PEERS=(nginx haproxy)
declare -A NAME=([portcullis]=Portcullis [nginx]=nginx [haproxy]=HAProxy)

UPSTREAM_PORT=18081
PORTCULLIS_HTTP_PORT=18080
PORTCULLIS_HTTPS_PORT=18443
NGINX_HTTP_PORT=18090
NGINX_HTTPS_PORT=18453
HAPROXY_HTTP_PORT=18100
HAPROXY_HTTPS_PORT=18463

# A run counts as proxy-bound when the proxy used at least this share of its core.
SATURATED_PCT=90
# Busy share of a core, with the proxies idle, below which the machine counts as quiet; and share
# of a core used by other work during a run above which the run is repeated (or flagged).
QUIET_PCT=10
OTHER_PCT=10

CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------------------------
# Small helpers

say() { printf '%s\n' "$*" >&2; }
die() { say "compare.sh: $*"; exit 1; }

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
}

parse_args() {
    while (($#)); do
        case "$1" in
            --rounds) ROUNDS=${2:?}; shift 2 ;;
            --duration) DURATION=${2:?}; shift 2 ;;
            --quick) ROUNDS=1; DURATION=5; shift ;;
            --binary) BINARY=${2:?}; shift 2 ;;
            --work) WORK=${2:?}; shift 2 ;;
            --idle-conns) IDLE_CONNS=${2:?}; shift 2 ;;
            --routes) ROUTES=${2:?}; shift 2 ;;
            --certs) CERTS=${2:?}; shift 2 ;;
            --quiet-wait) QUIET_WAIT=${2:?}; shift 2 ;;
            --only) IFS=, read -r -a SCENARIOS <<<"${2:?}"; shift 2 ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument: $1" ;;
        esac
    done
    [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
    [[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "--duration must be a positive integer (seconds)"
    [[ $IDLE_CONNS =~ ^[1-9][0-9]*$ ]] || die "--idle-conns must be a positive integer"
    [[ $ROUTES =~ ^[0-9]+$ && $CERTS =~ ^[0-9]+$ ]] || die "--routes and --certs must be numbers"
    [[ $QUIET_WAIT =~ ^[0-9]+$ ]] || die "--quiet-wait must be a number of seconds"
    local s
    for s in "${SCENARIOS[@]}"; do
        [[ " ${ALL_SCENARIOS[*]} " == *" $s "* ]] || die "unknown scenario: $s"
    done
}

check_tools() {
    local tool
    for tool in nginx haproxy wrk h2load openssl curl python3 taskset getconf; do
        command -v "$tool" >/dev/null || die "$tool not found (Debian: nginx haproxy wrk nghttp2-client openssl curl python3 util-linux)"
    done
    (($(nproc) >= 2)) || die "needs at least 2 cores (proxy on core $PROXY_CORE, load on core $LOAD_CORE)"
    [[ -x $BINARY ]] || die "no Portcullis binary at $BINARY (build it with cargo build --release, or pass --binary)"
}

# The idle scenario holds IDLE_CONNS sockets in the client and as many in the proxy.
raise_fd_limit() {
    local need=$((IDLE_CONNS + 2000))
    if (($(ulimit -n) < need)); then
        ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    fi
    (($(ulimit -n) >= need)) || die "ulimit -n is $(ulimit -n); the idle scenario needs $need (raise the hard limit or use --idle-conns)"
}

# Median of the numbers given as arguments (mean of the two middle ones for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {
        if (NR == 0) { print "n/a"; exit }
        if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2] + v[NR/2+1]) / 2 }'
}

# Seconds since the epoch with nanoseconds, as a decimal.
now() { date +%s.%N; }

# ---------------------------------------------------------------------------------------------
# Work directory: certificate, configs rendered from the templates beside this script

render() { # template output
    sed -e "s|@WORK@|$WORK|g" \
        -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" \
        -e "s|@PORTCULLIS_HTTP_PORT@|$PORTCULLIS_HTTP_PORT|g" \
        -e "s|@PORTCULLIS_HTTPS_PORT@|$PORTCULLIS_HTTPS_PORT|g" \
        -e "s|@NGINX_HTTP_PORT@|$NGINX_HTTP_PORT|g" \
        -e "s|@NGINX_HTTPS_PORT@|$NGINX_HTTPS_PORT|g" \
        -e "s|@HAPROXY_HTTP_PORT@|$HAPROXY_HTTP_PORT|g" \
        -e "s|@HAPROXY_HTTPS_PORT@|$HAPROXY_HTTPS_PORT|g" \
        -e "s|@FD_LIMIT@|$(ulimit -n)|g" \
        "$1" >"$2"
}

setup_work() {
    case "$WORK" in /|/tmp|/tmp/|"$HOME"|"$REPO") die "refusing to use $WORK as the work directory" ;; esac
    rm -rf "$WORK"
    mkdir -p "$WORK"/{tls,upstream/www,nginx-proxy/logs,portcullis/logs,haproxy/logs,runs}

    # One ECDSA P-256 certificate for all three proxies, covering the names the clients use.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>"$WORK/tls/openssl.log" \
        || die "openssl failed: $(cat "$WORK/tls/openssl.log")"
    # HAProxy reads the certificate and its key from one file.
    cat "$WORK/tls/cert.pem" "$WORK/tls/key.pem" >"$WORK/haproxy/cert-and-key.pem"

    head -c 16384 /dev/urandom >"$WORK/upstream/www/16k"

    render "$HERE/nginx-upstream.conf" "$WORK/upstream/nginx.conf"
    render "$HERE/nginx-proxy.conf" "$WORK/nginx-proxy/nginx.conf"
    render "$HERE/portcullis.toml" "$WORK/portcullis/portcullis.toml"
    if ((ROUTES || CERTS)); then
        python3 "$HERE/scale_config.py" --config "$WORK/portcullis/portcullis.toml" \
            --routes "$ROUTES" --certs "$CERTS" --certs-dir "$WORK/portcullis/certs" \
            || die "scale_config.py failed"
    fi
    render "$HERE/haproxy.cfg" "$WORK/haproxy/haproxy.cfg"
    haproxy -c -f "$WORK/haproxy/haproxy.cfg" >"$WORK/haproxy/check.log" 2>&1 \
        || die "haproxy -c failed: $(cat "$WORK/haproxy/check.log")"

    # A private copy: the build may replace target/release/portcullis while this runs.
    cp "$BINARY" "$WORK/portcullis/portcullis"
    "$WORK/portcullis/portcullis" check -c "$WORK/portcullis/portcullis.toml" >"$WORK/portcullis/check.log" 2>&1 \
        || die "portcullis check failed: $(cat "$WORK/portcullis/check.log")"

    NO_RESUME=""
    if command -v cc >/dev/null \
        && cc -shared -fPIC -O2 -o "$WORK/no_resume.so" "$HERE/no_resume.c" -ldl 2>"$WORK/cc.log"; then
        NO_RESUME="$WORK/no_resume.so"
    else
        say "warning: cannot build no_resume.so (no cc?); the handshake scenario is skipped"
    fi
}

# ---------------------------------------------------------------------------------------------
# Processes. Every process started here is recorded and stopped by the EXIT trap.

declare -A PID=()       # name -> pid of a process this script started

stop_pid() { # pid
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in {1..50}; do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop() { # name
    if [[ -n ${PID[$1]:-} ]]; then
        stop_pid "${PID[$1]}"
        unset "PID[$1]"
    fi
}

cleanup() {
    local name
    for name in "${!PID[@]}"; do stop "$name"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # name port
    local i
    for i in {1..100}; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
        kill -0 "${PID[$1]}" 2>/dev/null || die "$1 exited at start; see $WORK/$1*/"
        sleep 0.1
    done
    die "$1 is not listening on 127.0.0.1:$2 after 10 s"
}

start_nginx() { # name dir core port...
    local name=$1 dir=$2 core=$3
    shift 3
    # -e and daemon off keep nginx away from /var/log/nginx and /run; taskset execs nginx, so
    # $! is the master, whose workers inherit the CPU affinity.
    taskset -c "$core" nginx -p "$dir" -c nginx.conf -e "$dir/error.log" \
        -g "daemon off; pid $dir/nginx.pid;" >"$dir/stdout.log" 2>&1 &
    PID[$name]=$!
    local port
    for port in "$@"; do wait_port "$name" "$port"; done
}

start_upstream() { start_nginx upstream "$WORK/upstream" "$LOAD_CORE" "$UPSTREAM_PORT"; }

start_proxy() { # portcullis|nginx|haproxy
    case "$1" in
        portcullis)
            taskset -c "$PROXY_CORE" "$WORK/portcullis/portcullis" run -c "$WORK/portcullis/portcullis.toml" \
                >>"$WORK/portcullis/stdout.log" 2>>"$WORK/portcullis/stderr.log" &
            PID[portcullis]=$!
            wait_port portcullis "$PORTCULLIS_HTTPS_PORT"
            wait_port portcullis "$PORTCULLIS_HTTP_PORT"
            ;;
        nginx)
            start_nginx nginx "$WORK/nginx-proxy" "$PROXY_CORE" "$NGINX_HTTPS_PORT" "$NGINX_HTTP_PORT"
            ;;
        haproxy)
            # -db: foreground, no master process, so $! (taskset execs haproxy) is the one
            # process that does everything. stdout is the access log (log stdout in
            # haproxy.cfg); reset_log tells how a run's lines are found in it.
            taskset -c "$PROXY_CORE" haproxy -db -f "$WORK/haproxy/haproxy.cfg" \
                >>"$WORK/haproxy/logs/access.log" 2>>"$WORK/haproxy/stderr.log" &
            PID[haproxy]=$!
            wait_port haproxy "$HAPROXY_HTTPS_PORT"
            wait_port haproxy "$HAPROXY_HTTP_PORT"
            ;;
    esac
}

restart_proxy() { stop "$1"; start_proxy "$1"; }

https_port() {
    case "$1" in
        portcullis) echo "$PORTCULLIS_HTTPS_PORT" ;;
        nginx) echo "$NGINX_HTTPS_PORT" ;;
        haproxy) echo "$HAPROXY_HTTPS_PORT" ;;
    esac
}
http_port() {
    case "$1" in
        portcullis) echo "$PORTCULLIS_HTTP_PORT" ;;
        nginx) echo "$NGINX_HTTP_PORT" ;;
        haproxy) echo "$HAPROXY_HTTP_PORT" ;;
    esac
}

# The processes whose CPU and memory count as the proxy's: Portcullis is one process (all its
# threads, the access-log writer included), and so is HAProxy (one thread, no master); nginx
# (proxy or upstream) is the master and its worker.
proxy_pids() {
    local pid=${PID[$1]}
    echo "$pid"
    if [[ $1 == nginx || $1 == upstream ]]; then pgrep -P "$pid" || true; fi
}

# ---------------------------------------------------------------------------------------------
# Measurements from /proc

# utime + stime in clock ticks, summed over the given pids (threads included). The comm field
# is skipped by cutting at ") " so that fields 14 and 15 of stat are 12 and 13 here.
cpu_ticks() {
    local pid total=0 fields
    for pid in "$@"; do
        fields=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + $(awk '{print $12 + $13}' <<<"$fields")))
    done
    echo "$total"
}

# "busy total interrupts" clock ticks of one core from /proc/stat; busy includes interrupts
# (irq + softirq), where the kernel does much of the loopback TCP work without charging it to a
# process.
core_ticks() {
    awk -v cpu="cpu$1" '$1 == cpu {busy = $2 + $3 + $4 + $7 + $8 + $9;
        print busy, busy + $5 + $6, $7 + $8}' /proc/stat
}

rss_kib() { # pids...
    local pid total=0 kib
    for pid in "$@"; do
        kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${kib:-0}))
    done
    echo "$total"
}

# Busy percentage of a core between two core_ticks readings.
busy_pct() { # "busy0 total0 irq0" "busy1 total1 irq1"
    awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); t = y[2] - x[2];
        printf "%.0f", (t > 0) ? 100 * (y[1] - x[1]) / t : 0}'
}

# The same, leaving out interrupt time: what processes used.
process_pct() { # "busy0 total0 irq0" "busy1 total1 irq1"
    awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); t = y[2] - x[2];
        printf "%.0f", (t > 0) ? 100 * ((y[1] - y[3]) - (x[1] - x[3])) / t : 0}'
}

# Waits until both cores are idle for a second (at most QUIET_WAIT s), so that no other work on
# the machine is measured as slowness of the proxy or the load generator.
wait_quiet() {
    local waited=0 a0 a1 b0 b1 busy0 busy1
    while :; do
        a0=$(core_ticks "$PROXY_CORE"); a1=$(core_ticks "$LOAD_CORE")
        sleep 1
        b0=$(core_ticks "$PROXY_CORE"); b1=$(core_ticks "$LOAD_CORE")
        busy0=$(busy_pct "$a0" "$b0"); busy1=$(busy_pct "$a1" "$b1")
        ((busy0 < QUIET_PCT && busy1 < QUIET_PCT)) && return 0
        ((waited == 0)) && say "  waiting for the machine to go quiet (core $PROXY_CORE ${busy0}%, core $LOAD_CORE ${busy1}% busy)"
        waited=$((waited + 1))
        if ((waited >= QUIET_WAIT)); then
            say "  warning: cores still busy after ${QUIET_WAIT}s (core $PROXY_CORE ${busy0}%, core $LOAD_CORE ${busy1}%); running anyway"
            return 0
        fi
    done
}

# Ticks used over some seconds, as a percentage of one core.
pct_of_core() { # ticks seconds
    awk -v d="$1" -v hz="$CLK_TCK" -v s="$2" 'BEGIN {printf "%.0f", 100 * d / hz / s}'
}

# CPU ticks of the script's waited-for children (cutime + cstime of the main shell, $$): the
# load generator's, once it has exited. So measured must run in the main shell, not a subshell.
children_ticks() {
    sed 's/^.*) //' "/proc/$$/stat" | awk '{print $14 + $15}'
}

# Runs a load command and sets, over the run:
#   PROXY_CPU  % of one core used by the proxy; below SATURATED_PCT the figure measures the
#              load side, not the proxy;
#   LOAD_CPU   % busy of the load core;
#   OTHER_CPU  % of either core (the larger of the two) used by processes other than the
#              proxy, the load generator and the upstream: other work on the machine. Interrupt
#              time (loopback network processing) is left out, since the load itself causes it.
measured() { # proxy outfile cmd...
    local proxy=$1 out=$2
    shift 2
    local pids upids t0 t1 p0 p1 u0 u1 g0 g1 c0 c1 k0 k1
    read -r -a pids <<<"$(proxy_pids "$proxy" | tr '\n' ' ')"
    read -r -a upids <<<"$(proxy_pids upstream | tr '\n' ' ')"
    p0=$(cpu_ticks "${pids[@]}"); u0=$(cpu_ticks "${upids[@]}"); g0=$(children_ticks)
    c0=$(core_ticks "$LOAD_CORE"); k0=$(core_ticks "$PROXY_CORE"); t0=$(now)
    local rc=0
    "$@" >"$out" 2>&1 || rc=$?
    p1=$(cpu_ticks "${pids[@]}"); u1=$(cpu_ticks "${upids[@]}"); g1=$(children_ticks)
    c1=$(core_ticks "$LOAD_CORE"); k1=$(core_ticks "$PROXY_CORE"); t1=$(now)
    local secs load_side
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
    PROXY_CPU=$(pct_of_core $((p1 - p0)) "$secs")
    load_side=$(pct_of_core $((u1 - u0 + g1 - g0)) "$secs")
    LOAD_CPU=$(busy_pct "$c0" "$c1")
    local other0=$(($(process_pct "$k0" "$k1") - PROXY_CPU))
    local other1=$(($(process_pct "$c0" "$c1") - load_side))
    OTHER_CPU=$((other0 > other1 ? other0 : other1))
    ((OTHER_CPU >= 0)) || OTHER_CPU=0
    return "$rc"
}

# ---------------------------------------------------------------------------------------------
# Access logs: the server-side check that every request got the expected status

log_files() {
    case "$1" in
        portcullis) compgen -G "$WORK/portcullis/logs/*.jsonl" || true ;;
        nginx) echo "$WORK/nginx-proxy/logs/access.log" ;;
        haproxy) echo "$WORK/haproxy/logs/access.log" ;;
    esac
}

# Where the current run's lines start in HAProxy's log (see reset_log).
declare -A LOG_FROM=()

# Truncated rather than deleted: the proxies keep the file open and go on writing. Portcullis
# and nginx open it with O_APPEND, so they go on at the new end. HAProxy's log is its stdout,
# opened for appending by start_proxy, but HAProxy makes it non-blocking with F_SETFL, which
# clears O_APPEND: it goes on writing at its own offset, past a hole where the old lines were.
# That offset (from /proc/PID/fdinfo/1, read after the truncation) is where the run's lines
# start; the hole takes no disk space.
reset_log() {
    local f
    while read -r f; do
        if [[ -f $f ]]; then : >"$f"; fi
    done < <(log_files "$1")
    if [[ $1 == haproxy ]]; then
        LOG_FROM[haproxy]=$(awk '$1 == "pos:" {print $2}' "/proc/${PID[haproxy]}/fdinfo/1")
    fi
}

# The lines logged since reset_log.
log_text() {
    local f files=()
    while read -r f; do
        if [[ -f $f ]]; then files+=("$f"); fi
    done < <(log_files "$1")
    ((${#files[@]})) || return 0
    if [[ $1 == haproxy ]]; then
        tail -c +$((${LOG_FROM[haproxy]:-0} + 1)) "${files[@]}"
    else
        cat "${files[@]}"
    fi
}

log_bytes() {
    local f total=0
    while read -r f; do
        if [[ -f $f ]]; then total=$((total + $(stat -c %s "$f"))); fi
    done < <(log_files "$1")
    echo "$total"
}

# Portcullis and nginx buffer their log and flush within about a second of going idle (HAProxy
# writes each line at once); wait until the size stops changing (at most 15 s) before counting.
wait_log_quiet() {
    local last=-1 size stable=0 i
    for i in {1..30}; do
        size=$(log_bytes "$1")
        if [[ $size == "$last" ]]; then
            stable=$((stable + 1))
            ((stable >= 3)) && return 0
        else
            stable=0
        fi
        last=$size
        sleep 0.5
    done
}

# "count status" lines for the requests logged since reset_log.
#
# HAProxy has no 499: a request the client gave up on is logged with the status it had (-1 when
# no response had started, 400 "<BADREQ>" when the connection closed during the request, or the
# response's status when it was already under way) and a termination state starting with C
# (client side), in the "term" field of haproxy.cfg's log-format. Such lines with a status
# below 100 or from 400 up count as "aborted:<status>". HAProxy also logs connections that
# failed before any request (error-log-format: an "error" field and no status), such as a
# handshake cut short: "conn_error". In HAProxy's log, a line with neither counts as "unparsed"
# (and fails the run); Portcullis's and nginx's logs hold request lines only.
log_statuses() {
    log_text "$1" | awk -v haproxy="$([[ $1 == haproxy ]] && echo 1 || echo 0)" '
        match($0, /"status":-?[0-9]+/) {
            status = substr($0, RSTART + 9, RLENGTH - 9) + 0
            if (haproxy && $0 ~ /"term":"C/ && (status < 100 || status >= 400)) print "aborted:" status
            else print status
            next
        }
        !haproxy { next }
        /"error":/ { print "conn_error"; next }
        NF { print "unparsed" }' | sort | uniq -c | awk '{print $1, $2}'
}

# Whether a status from log_statuses is a request in flight that the client dropped when it
# stopped: nginx's 499 (client closed request; tolerated in Portcullis's log too), or HAProxy's
# client-side aborts and connection errors (see log_statuses).
is_aborted() { # proxy status
    case "$1:$2" in
        haproxy:aborted:*|haproxy:conn_error) return 0 ;;
        haproxy:*) return 1 ;;
        *:499) return 0 ;;
        *) return 1 ;;
    esac
}

# Checks the log against the expected status. When a load generator stops, it drops the
# requests still in flight (at most one per connection or stream): those are logged as aborted
# (see is_aborted), so aborted lines up to that number are tolerated, and reported. Any other
# status fails the run. Sets LOG_NOTE; returns 1 on failure.
check_log() { # proxy expected-status client-responses in-flight-limit
    local proxy=$1 expect=$2 client=$3 limit=$4
    local good=0 aborted=0 aborted_note="" others="" count status
    wait_log_quiet "$proxy"
    while read -r count status; do
        [[ -z $count ]] && continue
        if [[ $status == "$expect" ]]; then
            good=$count
        elif is_aborted "$proxy" "$status"; then
            aborted=$((aborted + count))
            aborted_note+=" $count x $status,"
        else
            others+=" ${status} x $count;"
        fi
    done < <(log_statuses "$proxy")
    LOG_NOTE="log: $good x $expect (client counted $client)"
    ((aborted)) && LOG_NOTE+=",${aborted_note%,} (aborted when the client stopped)"
    [[ -n $others ]] && LOG_NOTE+="; UNEXPECTED:${others%;}"
    ((good > 0)) || { LOG_NOTE+="; no $expect in the access log"; return 1; }
    ((aborted <= limit)) || { LOG_NOTE+="; more aborted lines than requests in flight ($limit)"; return 1; }
    [[ -z $others ]]
}

# ---------------------------------------------------------------------------------------------
# Load generators

# Extra environment for wrk only (the handshake scenario preloads no_resume.so).
WRK_ENV=()

# wrk with report.lua; sets WRK_REQUESTS, WRK_RPS, WRK_MIBPS, WRK_P99_MS, WRK_BYTES_PER_REQ and
# CLIENT_NOTE; returns 1 if wrk counted any error (non-2xx/3xx status, socket errors).
run_wrk() { # proxy outfile conns url [extra wrk args...]
    local proxy=$1 out=$2 conns=$3 url=$4
    shift 4
    WRK_REQUESTS=0 WRK_RPS="?" WRK_MIBPS="?" WRK_P99_MS="?" WRK_BYTES_PER_REQ=0
    local rc=0
    measured "$proxy" "$out" timeout -k 5 $((DURATION + 30)) \
        env "${WRK_ENV[@]}" taskset -c "$LOAD_CORE" wrk -t1 -c"$conns" -d"${DURATION}s" --latency -s "$HERE/report.lua" "$@" "$url" || rc=$?
    local line
    line=$(grep '^WRK ' "$out" || true)
    if ((rc != 0)) || [[ -z $line ]]; then
        CLIENT_NOTE="wrk failed (exit $rc): $(tail -n 3 "$out" | tr '\n' ' ')"
        return 1
    fi
    local -A w=()
    local kv
    for kv in ${line#WRK }; do w[${kv%%=*}]=${kv#*=}; done
    WRK_REQUESTS=${w[requests]}
    WRK_RPS=$(awk -v r="${w[requests]}" -v us="${w[duration_us]}" 'BEGIN {printf "%.0f", r * 1e6 / us}')
    WRK_MIBPS=$(awk -v b="${w[bytes]}" -v us="${w[duration_us]}" 'BEGIN {printf "%.1f", b * 1e6 / us / 1048576}')
    WRK_P99_MS=$(awk -v us="${w[p99_us]}" 'BEGIN {printf "%.2f", us / 1000}')
    WRK_BYTES_PER_REQ=$(awk -v b="${w[bytes]}" -v r="${w[requests]}" 'BEGIN {printf "%.0f", (r > 0) ? b / r : 0}')
    CLIENT_NOTE="wrk: ${w[requests]} responses, errors connect=${w[connect]} read=${w[read]} write=${w[write]} timeout=${w[timeout]} status=${w[status]}"
    if ((w[requests] == 0 || w[connect] + w[read] + w[write] + w[timeout] + w[status] > 0)); then
        return 1
    fi
    return 0
}

# h2load over h2; sets H2_RPS, H2_SUCCEEDED and CLIENT_NOTE; returns 1 unless every finished
# request succeeded with a 2xx over h2.
run_h2load() { # proxy outfile clients streams url
    local proxy=$1 out=$2 clients=$3 streams=$4 url=$5
    H2_RPS="?" H2_SUCCEEDED=0
    local rc=0
    measured "$proxy" "$out" timeout -k 5 $((DURATION + 30)) \
        taskset -c "$LOAD_CORE" h2load -t1 -c"$clients" -m"$streams" -D "$DURATION" "$url" || rc=$?
    local finished requests codes proto
    finished=$(grep '^finished in' "$out" || true)
    requests=$(grep '^requests:' "$out" || true)
    codes=$(grep '^status codes:' "$out" || true)
    proto=$(grep '^Application protocol:' "$out" || true)
    if ((rc != 0)) || [[ -z $finished || -z $requests || -z $codes ]]; then
        CLIENT_NOTE="h2load failed (exit $rc): $(grep -v '^progress' "$out" | tail -n 3 | tr '\n' ' ')"
        return 1
    fi
    H2_RPS=$(awk '{gsub(",", ""); print $4}' <<<"$finished")
    H2_RPS=$(awk -v r="$H2_RPS" 'BEGIN {printf "%.0f", r}')
    # requests: T total, S started, D done, OK succeeded, F failed, E errored, TO timeout
    local -a r c
    read -r -a r <<<"$(tr -d ',' <<<"${requests#requests: }" | awk '{print $1, $3, $5, $7, $9, $11, $13}')"
    # status codes: a 2xx, b 3xx, c 4xx, d 5xx
    read -r -a c <<<"$(tr -d ',' <<<"${codes#status codes: }" | awk '{print $1, $3, $5, $7}')"
    H2_SUCCEEDED=${r[3]}
    CLIENT_NOTE="h2load: done=${r[2]} succeeded=${r[3]} failed=${r[4]} errored=${r[5]} timeout=${r[6]}; 2xx=${c[0]} 3xx=${c[1]} 4xx=${c[2]} 5xx=${c[3]}; ${proto:-no ALPN line}"
    if ((r[3] == 0 || r[3] != r[2] || r[4] + r[5] + r[6] > 0 || c[0] != r[3] || c[1] + c[2] + c[3] > 0)) \
        || [[ $proto != *h2* ]]; then
        return 1
    fi
    return 0
}

# ---------------------------------------------------------------------------------------------
# Results: one list of per-round values per (metric, proxy)

declare -A VALUES=() PCPU=() LCPU=() OCPU=()
FAILURES=()

record() { # metric proxy value [proxy_cpu load_cpu other_cpu]
    VALUES[$1|$2]+="$3 "
    if (($# >= 6)); then
        PCPU[$1|$2]+="$4 "
        LCPU[$1|$2]+="$5 "
        OCPU[$1|$2]+="$6 "
    fi
}

# A run disturbed by other work on the machine is run again, up to MAX_ATTEMPTS times; the
# last attempt counts whatever happened (and the table flags it).
MAX_ATTEMPTS=3
ATTEMPT=1
RETRY=0

undisturbed() {
    if ((OTHER_CPU > OTHER_PCT && ATTEMPT < MAX_ATTEMPTS)); then
        say "  discarded: ${OTHER_CPU}% of a core went to other work during the run; running it again"
        RETRY=1
        return 1
    fi
}

fail() { # scenario proxy round message
    FAILURES+=("$1 / $2 / round $3: $4")
    say "  FAILED: $4"
}

# ---------------------------------------------------------------------------------------------
# Scenarios. Each runs one round against one proxy.

scenario_h1() { # proxy round
    local out="$WORK/runs/h1-$1-$2.txt" ok=1
    reset_log "$1"
    run_wrk "$1" "$out" 64 "https://127.0.0.1:$(https_port "$1")/64" || ok=0
    check_log "$1" 200 "${WRK_REQUESTS:-0}" 64 || ok=0
    say "  $1: ${WRK_RPS:-?} req/s, p99 ${WRK_P99_MS:-?} ms, proxy CPU ${PROXY_CPU}%, load core ${LOAD_CPU}%, other work ${OTHER_CPU}% | $CLIENT_NOTE | $LOG_NOTE"
    undisturbed || return 0
    if ((ok)); then
        record h1_rps "$1" "$WRK_RPS" "$PROXY_CPU" "$LOAD_CPU" "$OTHER_CPU"
        record h1_p99 "$1" "$WRK_P99_MS" "$PROXY_CPU" "$LOAD_CPU" "$OTHER_CPU"
    else
        fail h1 "$1" "$2" "$CLIENT_NOTE | $LOG_NOTE (output: $out)"
    fi
}

scenario_h2() {
    local out="$WORK/runs/h2-$1-$2.txt" ok=1
    reset_log "$1"
    run_h2load "$1" "$out" 16 16 "https://127.0.0.1:$(https_port "$1")/64" || ok=0
    check_log "$1" 200 "${H2_SUCCEEDED:-0}" 256 || ok=0
    say "  $1: ${H2_RPS:-?} req/s, proxy CPU ${PROXY_CPU}%, load core ${LOAD_CPU}%, other work ${OTHER_CPU}% | $CLIENT_NOTE | $LOG_NOTE"
    undisturbed || return 0
    if ((ok)); then
        record h2_rps "$1" "$H2_RPS" "$PROXY_CPU" "$LOAD_CPU" "$OTHER_CPU"
    else
        fail h2 "$1" "$2" "$CLIENT_NOTE | $LOG_NOTE (output: $out)"
    fi
}

scenario_16k() {
    local out="$WORK/runs/16k-$1-$2.txt" ok=1
    reset_log "$1"
    run_wrk "$1" "$out" 64 "https://127.0.0.1:$(https_port "$1")/16k" || ok=0
    check_log "$1" 200 "${WRK_REQUESTS:-0}" 64 || ok=0
    # Every response carries the 16 KiB body plus headers; fewer bytes per response would mean
    # truncated bodies.
    if ((ok)) && ((WRK_BYTES_PER_REQ < 16384)); then
        ok=0
        CLIENT_NOTE+="; only $WRK_BYTES_PER_REQ bytes per response"
    fi
    say "  $1: ${WRK_MIBPS:-?} MiB/s (${WRK_RPS:-?} req/s, ${WRK_BYTES_PER_REQ:-?} B each), proxy CPU ${PROXY_CPU}%, load core ${LOAD_CPU}%, other work ${OTHER_CPU}% | $CLIENT_NOTE | $LOG_NOTE"
    undisturbed || return 0
    if ((ok)); then
        record 16k_mibps "$1" "$WRK_MIBPS" "$PROXY_CPU" "$LOAD_CPU" "$OTHER_CPU"
    else
        fail 16k "$1" "$2" "$CLIENT_NOTE | $LOG_NOTE (output: $out)"
    fi
}

# One request per connection, every connection a full handshake: wrk reconnects after each
# "Connection: close" response, and no_resume.so stops it from offering the previous session.
scenario_handshake() {
    local out="$WORK/runs/handshake-$1-$2.txt" ok=1
    reset_log "$1"
    WRK_ENV=("LD_PRELOAD=$NO_RESUME")
    run_wrk "$1" "$out" 64 "https://127.0.0.1:$(https_port "$1")/64" -H "Connection: close" || ok=0
    WRK_ENV=()
    check_log "$1" 200 "${WRK_REQUESTS:-0}" 64 || ok=0
    # nginx ($ssl_session_reused) and HAProxy (ssl_fc_is_resumed) log whether the session was
    # resumed; the client side is the same for all three proxies, so clean nginx and HAProxy logs
    # show that the shim works.
    local resumed=""
    case "$1" in
        nginx) resumed='"reused":"r"' ;;
        haproxy) resumed='"reused":1' ;;
    esac
    if [[ -n $resumed ]]; then
        local reused
        reused=$(log_text "$1" | grep -c "$resumed" || true)
        LOG_NOTE+="; resumed sessions: $reused"
        if ((reused > 0)); then ok=0; fi
    fi
    say "  $1: ${WRK_RPS:-?} new connections/s, proxy CPU ${PROXY_CPU}%, load core ${LOAD_CPU}%, other work ${OTHER_CPU}% | $CLIENT_NOTE | $LOG_NOTE"
    undisturbed || return 0
    if ((ok)); then
        record handshake_cps "$1" "$WRK_RPS" "$PROXY_CPU" "$LOAD_CPU" "$OTHER_CPU"
    else
        fail handshake "$1" "$2" "$CLIENT_NOTE | $LOG_NOTE (output: $out)"
    fi
}

scenario_redirect() {
    local out="$WORK/runs/redirect-$1-$2.txt" ok=1
    reset_log "$1"
    run_wrk "$1" "$out" 64 "http://127.0.0.1:$(http_port "$1")/64" || ok=0
    check_log "$1" 301 "${WRK_REQUESTS:-0}" 64 || ok=0
    say "  $1: ${WRK_RPS:-?} 301/s, proxy CPU ${PROXY_CPU}%, load core ${LOAD_CPU}%, other work ${OTHER_CPU}% | $CLIENT_NOTE | $LOG_NOTE"
    undisturbed || return 0
    if ((ok)); then
        record redirect_rps "$1" "$WRK_RPS" "$PROXY_CPU" "$LOAD_CPU" "$OTHER_CPU"
    else
        fail redirect "$1" "$2" "$CLIENT_NOTE | $LOG_NOTE (output: $out)"
    fi
}

# Memory per idle TLS keep-alive connection. Each round starts a fresh proxy so that memory
# freed by earlier scenarios (and kept by the allocator) cannot hide the connections' cost; one
# warm-up request first, so that start-up allocations are not counted per connection.
# idle: HTTP/1.1; idle_h2: the same over HTTP/2 (one stream each, then quiet).
scenario_idle() { idle_run "$1" "$2" idle idle_kib; }
scenario_idle_h2() { idle_run "$1" "$2" idle_h2 idle_h2_kib --h2; }

idle_run() { # proxy round scenario metric [client flags]
    local out="$WORK/runs/$3-$1-$2.txt" port scenario=$3 metric=$4
    local -a flags=("${@:5}")
    port=$(https_port "$1")
    restart_proxy "$1"
    curl -sk -o /dev/null "https://127.0.0.1:$port/64" || die "$1 does not answer after a restart"
    sleep 1
    local -a pids
    read -r -a pids <<<"$(proxy_pids "$1" | tr '\n' ' ')"
    local before after
    before=$(rss_kib "${pids[@]}")

    taskset -c "$LOAD_CORE" timeout -k 5 600 python3 "$HERE/idle_conns.py" --port "$port" \
        --count "$IDLE_CONNS" --open-timeout 300 --hold 600 "${flags[@]}" >"$out" 2>&1 &
    PID[idle_client]=$!
    local i
    for i in $(seq 1 3100); do
        grep -qE '^(READY|FAILED)' "$out" && break
        kill -0 "${PID[idle_client]}" 2>/dev/null || break
        sleep 0.1
    done
    # Let the proxy finish whatever it does after the last response before reading its RSS.
    sleep 2
    after=$(rss_kib "${pids[@]}")
    stop idle_client
    local result
    result=$(grep -E '^(READY|FAILED)' "$out" || echo "no result: $(tail -n 3 "$out" | tr '\n' ' ')")
    local closed
    closed=$(grep -o 'closed_by_server=[0-9]*' "$out" | cut -d= -f2 || true)
    local per_conn
    per_conn=$(awk -v a="$after" -v b="$before" -v n="$IDLE_CONNS" 'BEGIN {printf "%.1f", (a - b) / n}')
    say "  $1: RSS ${before} -> ${after} KiB, ${per_conn} KiB per connection | $result | closed by server while held: ${closed:-?}"
    if [[ $result == READY* && ${closed:-0} == 0 ]]; then
        record "$metric" "$1" "$per_conn"
    else
        fail "$scenario" "$1" "$2" "$result; closed by server: ${closed:-?} (output: $out)"
    fi
}

# ---------------------------------------------------------------------------------------------
# Before any load: each proxy answers each URL as expected, so that a broken config cannot pass
# for a fast proxy.

preflight() {
    local proxy port hport got
    got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$UPSTREAM_PORT/64")
    [[ $got == "200 64" ]] || die "upstream /64: $got"
    got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$UPSTREAM_PORT/16k")
    [[ $got == "200 16384" ]] || die "upstream /16k: $got"
    for proxy in "${PROXIES[@]}"; do
        port=$(https_port "$proxy")
        hport=$(http_port "$proxy")
        got=$(curl -sk --http1.1 -D - -o /dev/null -w 'END %{http_code} %{size_download}' "https://127.0.0.1:$port/64")
        [[ $got == *"END 200 64" ]] || die "$proxy https /64 over HTTP/1.1: ${got##*END }"
        grep -qi '^strict-transport-security: max-age=63072000' <<<"$got" || die "$proxy: no HSTS header"
        got=$(curl -sk --http2 -o /dev/null -w '%{http_version} %{http_code} %{size_download}' "https://127.0.0.1:$port/64")
        [[ $got == "2 200 64" ]] || die "$proxy https /64 over h2: $got"
        got=$(curl -sk -o /dev/null -w '%{http_code} %{size_download}' "https://127.0.0.1:$port/16k")
        [[ $got == "200 16384" ]] || die "$proxy https /16k: $got"
        got=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "http://127.0.0.1:$hport/64")
        [[ $got == "301 https://127.0.0.1:$port/64" ]] || die "$proxy http redirect: $got"
    done
}

# A short unmeasured run per proxy: upstream pools filled, code and allocator warm.
warm_up() {
    local proxy
    for proxy in "${PROXIES[@]}"; do
        timeout -k 5 30 taskset -c "$LOAD_CORE" wrk -t1 -c64 -d2s \
            "https://127.0.0.1:$(https_port "$proxy")/64" >/dev/null 2>&1 || true
    done
}

# ---------------------------------------------------------------------------------------------
# Report

# Metric: id, label (@N@: the idle connection count), lower-is-better flag.
METRICS=(
    "h1_rps|HTTPS HTTP/1.1 keep-alive, 64 conns, 64 B body: requests/s|0"
    "h1_p99|HTTPS HTTP/1.1 keep-alive, 64 conns, 64 B body: p99 latency (ms)|1"
    "h2_rps|HTTPS HTTP/2, 16 conns x 16 streams, 64 B body: requests/s|0"
    "16k_mibps|HTTPS HTTP/1.1, 64 conns, 16 KiB body: MiB/s|0"
    "handshake_cps|Full TLS handshake per request (no resumption), 64 conns: connections/s|0"
    "redirect_rps|Plain HTTP 301 redirect, 64 conns: 301s/s|0"
    "idle_kib|@N@ idle TLS keep-alive connections: KiB RSS per connection|1"
    "idle_h2_kib|@N@ idle TLS HTTP/2 connections: KiB RSS per connection|1"
)

# Median of a metric's rounds for a proxy, or n/a.
med() { # key
    local vals=${1:-}
    # shellcheck disable=SC2086
    if [[ -z ${vals// /} ]]; then echo "n/a"; else median $vals; fi
}

# a / b to two decimals, or n/a when either is n/a or b is not positive.
ratio() { # a b
    if [[ $1 != n/a && $2 != n/a ]] && awk -v b="$2" 'BEGIN {exit !(b > 0)}'; then
        awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'
    else
        echo "n/a"
    fi
}

# The best of the peers' figures: "figure proxy", the highest (the lowest when lower is better),
# or "n/a" when no peer has one. The figures are given as proxy=value arguments.
best_of() { # lower proxy=value...
    local lower=$1 kv best="" who=""
    shift
    for kv in "$@"; do
        [[ ${kv#*=} == n/a ]] && continue
        if [[ -z $best ]] || awk -v v="${kv#*=}" -v b="$best" -v l="$lower" 'BEGIN {exit !(l ? v < b : v > b)}'; then
            best=${kv#*=}
            who=${kv%%=*}
        fi
    done
    if [[ -z $best ]]; then echo "n/a"; else echo "$best $who"; fi
}

report() {
    local spec id label lower proxy flag best bestv bestwho ratio_best ratio_nginx cpu row
    local -A v=() c=() l=() o=()
    local names=() listed
    for proxy in "${PROXIES[@]}"; do names+=("${NAME[$proxy]}"); done
    listed=$(IFS=,; echo "${names[*]}")
    echo
    echo "## Results: medians of $ROUNDS round(s) x ${DURATION} s; each round runs ${listed//,/, }"
    echo
    echo "Portcullis / best peer compares with the better of nginx and HAProxy in each row (the higher"
    echo "figure for throughput, the lower for latency and memory); the peer is named in brackets."
    echo
    row="| scenario |"
    for proxy in "${PROXIES[@]}"; do row+=" ${NAME[$proxy]} |"; done
    row+=" Portcullis / best peer | Portcullis / nginx |"
    for proxy in "${PROXIES[@]}"; do row+=" CPU ${NAME[$proxy]} (proxy core / load core) |"; done
    echo "$row bottleneck |"
    row="|---|"
    for proxy in "${PROXIES[@]}"; do row+="---:|"; done
    row+="---:|---:|"
    for proxy in "${PROXIES[@]}"; do row+="---|"; done
    echo "$row---|"
    for spec in "${METRICS[@]}"; do
        IFS='|' read -r id label lower <<<"${spec//@N@/$IDLE_CONNS}"
        local peers=()
        for proxy in "${PROXIES[@]}"; do
            v[$proxy]=$(med "${VALUES[$id|$proxy]:-}")
            c[$proxy]=$(med "${PCPU[$id|$proxy]:-}")
            l[$proxy]=$(med "${LCPU[$id|$proxy]:-}")
            o[$proxy]=$(med "${OCPU[$id|$proxy]:-}")
        done
        for proxy in "${PEERS[@]}"; do peers+=("$proxy=${v[$proxy]}"); done
        best=$(best_of "$lower" "${peers[@]}")
        read -r bestv bestwho <<<"$best"
        local better=""
        if ((lower)); then better="; lower is better"; fi
        ratio_best=$(ratio "${v[portcullis]}" "$bestv")
        if [[ $ratio_best != n/a ]]; then ratio_best+=" (${NAME[$bestwho]}$better)"; fi
        ratio_nginx=$(ratio "${v[portcullis]}" "${v[nginx]}")
        if [[ $ratio_nginx != n/a && -n $better ]]; then ratio_nginx+=" (${better#; })"; fi
        row="| $label |"
        for proxy in "${PROXIES[@]}"; do row+=" ${v[$proxy]} |"; done
        row+=" $ratio_best | $ratio_nginx |"
        flag=""
        local measured=0
        for proxy in "${PROXIES[@]}"; do
            if [[ $id == idle_*kib ]]; then
                row+=" - |"
                continue
            fi
            if [[ ${c[$proxy]} == n/a ]]; then
                row+=" n/a |"
                continue
            fi
            measured=1
            row+=" ${c[$proxy]}% / ${l[$proxy]}% |"
            if awk -v c="${c[$proxy]}" -v s="$SATURATED_PCT" 'BEGIN {exit !(c < s)}'; then
                flag+="WARN: ${NAME[$proxy]} not saturated (${c[$proxy]}%, load core ${l[$proxy]}%): figure bounded by the load side. "
            fi
            if awk -v c="${o[$proxy]}" -v s="$OTHER_PCT" 'BEGIN {exit !(c > s)}'; then
                flag+="WARN: ${o[$proxy]}% of a core went to other work during ${NAME[$proxy]} runs. "
            fi
        done
        if [[ $id == idle_*kib ]]; then
            flag="-"
        elif ((!measured)); then
            flag="no run counted"
        elif [[ -z $flag ]]; then
            flag="proxy core saturated"
        fi
        echo "$row ${flag% } |"
    done
    echo
    echo "Per-round values (${listed//,/ | }):"
    echo
    for spec in "${METRICS[@]}"; do
        IFS='|' read -r id label lower <<<"${spec//@N@/$IDLE_CONNS}"
        row="- $id:"
        local sep=""
        for proxy in "${PROXIES[@]}"; do
            cpu=${VALUES[$id|$proxy]:-none}
            row+="$sep ${cpu% }"
            sep=" |"
        done
        echo "$row"
    done
    echo
    # Throughput per second of proxy CPU: what each proxy did with the CPU it used. Useful when
    # a proxy was not saturated; it assumes cost scales linearly, so it is an estimate.
    echo "Throughput per proxy CPU-second (median value / median proxy CPU share; an estimate):"
    echo
    row="| scenario |"
    for proxy in "${PROXIES[@]}"; do row+=" ${NAME[$proxy]} |"; done
    echo "$row Portcullis / best peer | Portcullis / nginx |"
    row="|---|"
    for proxy in "${PROXIES[@]}"; do row+="---:|"; done
    echo "$row---:|---:|"
    local -A per=()
    for spec in "${METRICS[@]}"; do
        IFS='|' read -r id label lower <<<"${spec//@N@/$IDLE_CONNS}"
        ((lower)) && continue
        local peers=()
        row="| $label |"
        for proxy in "${PROXIES[@]}"; do
            local value share
            value=$(med "${VALUES[$id|$proxy]:-}")
            share=$(med "${PCPU[$id|$proxy]:-}")
            if [[ $value == n/a || $share == n/a || $share == 0 ]]; then
                per[$proxy]="n/a"
                row+=" n/a |"
            else
                per[$proxy]=$(awk -v v="$value" -v c="$share" 'BEGIN {printf "%.4f", v * 100 / c}')
                row+=" $(awk -v v="${per[$proxy]}" 'BEGIN {printf "%.0f", v}') |"
            fi
        done
        for proxy in "${PEERS[@]}"; do peers+=("$proxy=${per[$proxy]}"); done
        best=$(best_of 0 "${peers[@]}")
        read -r bestv bestwho <<<"$best"
        ratio_best=$(ratio "${per[portcullis]}" "$bestv")
        if [[ $ratio_best != n/a ]]; then ratio_best+=" (${NAME[$bestwho]})"; fi
        echo "$row $ratio_best | $(ratio "${per[portcullis]}" "${per[nginx]}") |"
    done
}

environment_info() {
    echo "## Environment"
    echo
    echo "- date: $(date -u)"
    echo "- cores: $(nproc); CPU: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "- kernel: $(uname -r)"
    echo "- portcullis: $("$WORK/portcullis/portcullis" --version 2>&1 | head -n 1) (sha256 $(sha256sum "$WORK/portcullis/portcullis" | cut -c1-16))"
    echo "- $(nginx -v 2>&1)"
    echo "- $(haproxy -v 2>&1 | head -n 1)"
    echo "- wrk: $(wrk -v 2>&1 | head -n 1 | awk '{print $2}')"
    echo "- h2load: $(h2load --version 2>&1 | head -n 1)"
    echo "- $(openssl version)"
    echo "- $(python3 --version 2>&1)"
    echo "- command: benches/load/compare.sh ${ORIGINAL_ARGS[*]:-}"
}

# ---------------------------------------------------------------------------------------------

main() {
    ORIGINAL_ARGS=("$@")
    parse_args "$@"
    check_tools
    raise_fd_limit
    setup_work
    say "work directory: $WORK; $ROUNDS round(s) x ${DURATION} s; scenarios: ${SCENARIOS[*]}"

    start_upstream
    local proxy
    for proxy in "${PROXIES[@]}"; do start_proxy "$proxy"; done
    preflight
    warm_up

    local scenario round
    for scenario in "${SCENARIOS[@]}"; do
        if [[ $scenario == handshake && -z $NO_RESUME ]]; then
            say "== handshake: skipped (no no_resume.so)"
            continue
        fi
        say "== $scenario"
        for round in $(seq 1 "$ROUNDS"); do
            for proxy in "${PROXIES[@]}"; do
                say " round $round, $proxy"
                for ATTEMPT in $(seq 1 "$MAX_ATTEMPTS"); do
                    RETRY=0
                    wait_quiet
                    "scenario_$scenario" "$proxy" "$round"
                    ((RETRY)) || break
                done
            done
        done
    done

    {
        environment_info
        report
        if ((${#FAILURES[@]})); then
            echo
            echo "## Failed runs (left out of the medians)"
            echo
            local f
            for f in "${FAILURES[@]}"; do echo "- $f"; done
        fi
        echo
        echo "Proxy diagnostics (warnings and errors logged during the whole run):"
        echo
        # Portcullis warns at every start that it keeps root (allow_root in portcullis.toml);
        # expected, and counted apart.
        local root_warn='warning=server.allow_root'
        echo "- Portcullis stderr: $(grep -E 'WARN|ERROR' "$WORK/portcullis/stderr.log" | grep -cv "$root_warn" || true) WARN/ERROR line(s), besides $(grep -c "$root_warn" "$WORK/portcullis/stderr.log" || true) expected allow_root warning(s) (one per start)"
        grep -E 'WARN|ERROR' "$WORK/portcullis/stderr.log" | grep -v "$root_warn" | head -n 5 | sed 's/^/    /' || true
        echo "- nginx error.log: $(grep -cE '\[(warn|error|crit|alert|emerg)\]' "$WORK/nginx-proxy/error.log" 2>/dev/null || true) line(s) at warn or above"
        grep -E '\[(warn|error|crit|alert|emerg)\]' "$WORK/nginx-proxy/error.log" 2>/dev/null | head -n 5 | sed 's/^/    /' || true
        # HAProxy warns at every start that the descriptor limit is below 2 x maxconn (see
        # haproxy.cfg); that one is expected and counted apart.
        local fd_alert='FD limit ([0-9]*) too low for maxconn'
        echo "- HAProxy stderr: $(grep -E 'WARNING|ALERT' "$WORK/haproxy/stderr.log" 2>/dev/null | grep -cv "$fd_alert" || true) WARNING/ALERT line(s), besides $(grep -c "$fd_alert" "$WORK/haproxy/stderr.log" 2>/dev/null || true) expected FD-limit alert(s) (one per start)"
        grep -E 'WARNING|ALERT' "$WORK/haproxy/stderr.log" 2>/dev/null | grep -v "$fd_alert" | head -n 5 | sed 's/^/    /' || true
    } | tee "$WORK/results.md"
    say "results: $WORK/results.md; raw outputs: $WORK/runs/"

    ((${#FAILURES[@]} == 0))
}

main "$@"
