#!/usr/bin/env bash
# Whole-system capacity: the bridge and loadgen (release builds) side by side on this machine,
# one fresh bridge per configuration, one markdown table row per configuration, read from
# loadgen's --json report.
#
#   benches/capacity.sh                      # every row, 20 s of media each
#   DURATION=10s ROWS='ingest-16 defaults-16' benches/capacity.sh
#
# Rows (ROWS, space separated, in this order by default):
#   ingest-N     N publishers, ingest only: the bridge with --hls off and no --rtmp
#   defaults-N   N publishers, the bridge's defaults (LL-HLS on) plus --rtmp to loadgen's
#                built-in RTMP server; loadgen follows every stream's HLS playlist too
#   signal-N     N WHIP sessions of signalling only (`loadgen signal`, SIGNAL_RATE a second):
#                server CPU and RSS growth per session set up
#
# Knobs (environment): DURATION (media per publish row, default 20s), ROWS, SIGNAL_RATE
# (default 200), BRIDGE and LOADGEN (binaries, default target/release/*), SKIP_BUILD=1 (use the
# binaries as they are), KEEP=1 (keep the logs and JSON reports; their folder is printed).
# SLO_INGEST, SLO_DEFAULTS, SLO_SIGNAL: loadgen `--slo` expressions (space separated) for the
# rows of that kind; the script then exits 1 if any row missed one (a CI gate, see .ci/run).
#
# Columns: server CPU ms per second per publisher and CPU µs per RTP packet are the bridge's
# own process metrics over the steady window (see README, `--server-metrics`); frames lost are
# video frames sent but not found in the RTMP / HLS output; the p99s are from a frame's send to
# its FLV tag arriving (frame_rtmp) or the LL-HLS part holding it fully fetched (frame_hls).
# `-` means not measured in that configuration. Numbers depend on the machine and on whatever
# else runs on it: loadgen's publishers share the cores with the bridge.

set -euo pipefail

cd "$(dirname "$0")/.."

DURATION=${DURATION:-20s}
ROWS=${ROWS:-ingest-16 ingest-100 defaults-16 defaults-32 signal-1000}
SIGNAL_RATE=${SIGNAL_RATE:-200}
BRIDGE=${BRIDGE:-target/release/bridge}
LOADGEN=${LOADGEN:-target/release/loadgen}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
SLO_INGEST=${SLO_INGEST:-}
SLO_DEFAULTS=${SLO_DEFAULTS:-}
SLO_SIGNAL=${SLO_SIGNAL:-}
missed=0

command -v jq >/dev/null || { echo "capacity.sh: needs jq" >&2; exit 2; }

if [[ $SKIP_BUILD != 1 ]]; then
    cargo build --release -p bridge -p loadgen >&2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/capacity.XXXXXX")
bridge_pid=""
loadgen_pid=""

cleanup() {
    # Only the processes this script started, by their id.
    for pid in $loadgen_pid $bridge_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 ]]; then
        echo "capacity.sh: logs and reports in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts the bridge on fresh ports with the given extra flags; sets HTTP and bridge_pid.
start_bridge() {
    local dir=$1
    shift
    HTTP=$(free_port)
    local udp
    udp=$(free_port)
    # A short drain on stop (an env setting: older binaries of an A/B run ignore it).
    BRIDGE_DRAIN_TIMEOUT_SECS=2 "$BRIDGE" --http "127.0.0.1:$HTTP" --udp "127.0.0.1:$udp" --hls-dir "$dir/hls" "$@" \
        >"$dir/bridge.log" 2>&1 &
    bridge_pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$HTTP") 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$bridge_pid" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "capacity.sh: the bridge did not start; its log:" >&2
    cat "$dir/bridge.log" >&2
    exit 2
}

stop_bridge() {
    kill "$bridge_pid" 2>/dev/null || true
    wait "$bridge_pid" 2>/dev/null || true
    bridge_pid=""
}

# Runs loadgen in the background (so the trap can stop it) and returns its exit status.
run_loadgen() {
    local log=$1
    shift
    "$LOADGEN" "$@" >"$log" 2>&1 &
    loadgen_pid=$!
    local status=0
    wait "$loadgen_pid" || status=$?
    loadgen_pid=""
    return "$status"
}

# `--slo` flags from a space-separated list of expressions.
slo_flags() {
    local expr
    for expr in $1; do
        printf '%s\n' --slo "$expr"
    done
}

# Notes a row whose loadgen run missed an SLO (exit 1): its report says which.
check_slo() {
    local status=$1 log=$2
    if [[ $status == 1 ]]; then
        missed=1
        echo "capacity.sh: an SLO was missed:" >&2
        grep -i "slo" "$log" >&2 || tail -n 20 "$log" >&2
    fi
}

# A loadgen run that could not be made (exit 2): say why and go on with the next row.
failed_row() {
    local config=$1 count=$2 log=$3
    echo "| $config | $count | run failed | | | | | see below |"
    echo "capacity.sh: $config: loadgen failed:" >&2
    tail -n 20 "$log" >&2
}

# One publish row from its report.
publish_row() {
    local config=$1 json=$2
    jq -r --arg config "$config" '
        def num(d): if . == null then "-" else ((. * pow(10; d) | round) / pow(10; d) | tostring) end;
        def lost(o): .outputs[o].frames.lost // null | num(0);
        def p99(m): (.latency[m] // null) as $l
            | if $l == null or $l.count == 0 then "-" else ($l.p99_ms | num(1)) + " ms" end;
        "| \($config) | \(.sessions.planned) | \(.server.cpu_ms_per_s_per_publisher | num(2))"
        + " | \(.server.us_per_packet | num(1)) | \(lost("rtmp")) / \(lost("hls"))"
        + " | \(p99("frame_rtmp")) | \(p99("frame_hls"))"
        + " | \(.sessions.failed) failed"
        + (if .server.error then "; server: \(.server.error)" else "" end) + " |"
    ' "$json"
}

publish() {
    local kind=$1 n=$2
    local dir="$WORK/$kind-$n"
    mkdir -p "$dir"
    local bridge_flags=() loadgen_flags=() config
    case $kind in
        ingest)
            config="ingest only (--hls off, no --rtmp)"
            bridge_flags=(--hls off)
            ;;
        defaults)
            config="defaults (LL-HLS) + --rtmp"
            local rtmp
            rtmp=$(free_port)
            bridge_flags=(--rtmp "rtmp://127.0.0.1:$rtmp/live/{stream}")
            ;;
    esac
    start_bridge "$dir" "${bridge_flags[@]}"
    if [[ $kind == defaults ]]; then
        loadgen_flags=(--rtmp-listen "127.0.0.1:$rtmp"
            --hls "http://127.0.0.1:$HTTP/hls/{stream}/index.m3u8")
        mapfile -t -O "${#loadgen_flags[@]}" loadgen_flags < <(slo_flags "$SLO_DEFAULTS")
    else
        mapfile -t loadgen_flags < <(slo_flags "$SLO_INGEST")
    fi
    local status=0
    run_loadgen "$dir/loadgen.log" publish --url "http://127.0.0.1:$HTTP/whip/cap{i}" \
        --publishers "$n" --duration "$DURATION" "${loadgen_flags[@]}" \
        --json "$dir/report.json" || status=$?
    stop_bridge
    if [[ $status == 2 || ! -s $dir/report.json ]]; then
        failed_row "$config" "$n" "$dir/loadgen.log"
    else
        publish_row "$config" "$dir/report.json"
        check_slo "$status" "$dir/loadgen.log"
    fi
}

signal() {
    local n=$1
    local dir="$WORK/signal-$n"
    mkdir -p "$dir"
    local config="signalling only (loadgen signal, $SIGNAL_RATE/s)"
    start_bridge "$dir" --max-sessions 20000 --connect-timeout-secs 120
    local status=0 slos=()
    mapfile -t slos < <(slo_flags "$SLO_SIGNAL")
    run_loadgen "$dir/loadgen.log" signal --url "http://127.0.0.1:$HTTP/whip/s{i}" \
        --sessions "$n" --rate "$SIGNAL_RATE" --json "$dir/report.json" "${slos[@]}" || status=$?
    stop_bridge
    if [[ $status == 2 || ! -s $dir/report.json ]]; then
        failed_row "$config" "$n sessions" "$dir/loadgen.log"
        return
    fi
    jq -r --arg config "$config" '
        def num(d): if . == null then "-" else ((. * pow(10; d) | round) / pow(10; d) | tostring) end;
        "| \($config) | \(.sessions.planned) sessions | - | - | - | - | - | "
        + "CPU \(.server.cpu_ms_per_session | num(3)) ms/session, "
        + "RSS \(.server.rss_bytes_per_session // null | if . == null then "-" else (. / 1024 | num(1)) end) KiB/session, "
        + "\(.sessions.failed) failed, \(.violations.total) violations"
        + (if .server.error then "; server: \(.server.error)" else "" end) + " |"
    ' "$dir/report.json"
    check_slo "$status" "$dir/loadgen.log"
}

echo "| configuration | publishers | server CPU ms/s per publisher | µs/packet | frames lost (rtmp / hls) | frame_rtmp p99 | frame_hls p99 | notes |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for row in $ROWS; do
    case $row in
        ingest-[0-9]* | defaults-[0-9]*) publish "${row%%-*}" "${row#*-}" ;;
        signal-[0-9]*) signal "${row#*-}" ;;
        *)
            echo "capacity.sh: unknown row $row (ingest-N, defaults-N, signal-N)" >&2
            exit 2
            ;;
    esac
done
exit "$missed"
