#!/usr/bin/env bash
# Start or stop one instance ("VM") of the local Terraform cloud: a simulated polling tentacle.
#
#   tentacle-ctl.sh start   # TENTACLE_{NAME,HOME,PYTHON,PYTHONPATH,SERVER,SPACE,WORKER_POOL,POLICY,COMMS_PORT,BOOT_DELAY,BUILD}
#   tentacle-ctl.sh stop    # TENTACLE_{NAME,HOME}
#
# start launches `python -m octopus_emulator register-worker --run --force` detached (own session, stdin from
# /dev/null, output to $TENTACLE_HOME/tentacle.log) so Terraform does not wait on its pipes, records its pid and
# fails if the simulator exits before it has checked its arguments. It writes TENTACLE_BUILD (the fingerprint of
# the configuration the instance is built from) to $TENTACLE_HOME/build.fingerprint: the module reads it to tell an
# outdated instance (built from an older configuration) from a current one. stop sends SIGTERM (SIGKILL after 10 s) and
# deletes $TENTACLE_HOME: the VM's disk is gone, so a rebuilt instance gets a new certificate and poll URI.
# OCTOPUS_API_KEY is read from the environment only (inherited from Terraform) and never printed.
set -euo pipefail

die() { echo "tentacle-ctl: error: $*" >&2; exit 1; }

name=${TENTACLE_NAME:?TENTACLE_NAME is required}
home=${TENTACLE_HOME:?TENTACLE_HOME is required}
# rm -rf safety: the home must be an absolute path ending in /<name>.
[[ $home == /* && $home == */"$name" && $name != "" && $name != "." && $name != ".." ]] ||
    die "TENTACLE_HOME ($home) must be an absolute path ending in /$name"
pidfile=$home/tentacle.pid
logfile=$home/tentacle.log
statusfile=$home/tentacle.status.json

# True when $1 is a live (not zombie) simulator process serving this home (guards against pid reuse).
is_ours() {
    local pid=$1 stat args
    stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    [[ -n $stat && $stat != Z* ]] || return 1
    if [[ -r /proc/$pid/cmdline ]]; then
        args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    else
        args=$(ps -ww -o args= -p "$pid" 2>/dev/null) || return 1
    fi
    [[ $args == *register-worker* && $args == *"--home $home "* ]]
}

signal_tentacle() { # signal pid: the whole process group (setsid made the tentacle its leader), else the pid
    kill "-$1" -- "-$2" 2>/dev/null || kill "-$1" "$2" 2>/dev/null || true
}

stop() {
    local pid i
    if [[ -f $pidfile ]]; then
        pid=$(<"$pidfile")
        if [[ $pid =~ ^[0-9]+$ ]] && is_ours "$pid"; then
            signal_tentacle TERM "$pid"
            for ((i = 0; i < 100; i++)); do is_ours "$pid" || break; sleep 0.1; done
            if is_ours "$pid"; then
                echo "tentacle $name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
                signal_tentacle KILL "$pid"
                for ((i = 0; i < 50; i++)); do is_ours "$pid" || break; sleep 0.1; done
            fi
            echo "stopped tentacle $name (pid $pid)"
        else
            echo "tentacle $name was not running"
        fi
    fi
    rm -rf -- "$home"
}

start() {
    [[ -n ${OCTOPUS_API_KEY:-} ]] ||
        die "OCTOPUS_API_KEY is not set in Terraform's environment; the tentacles of the local cloud need it to register"
    local python=${TENTACLE_PYTHON:-python3} pid rc i
    command -v "$python" >/dev/null || die "python_executable '$python' was not found"

    stop >/dev/null # a leftover from lost state: a rebuilt VM starts from a fresh disk
    mkdir -p "$home"
    printf '%s\n' "${TENTACLE_BUILD:-}" >"$home/build.fingerprint"
    cd "$home" # not Terraform's working directory, which may be a throwaway copy
    local args=(
        -m octopus_emulator register-worker
        --server "${TENTACLE_SERVER:?}" --name "$name" --workerpool "${TENTACLE_WORKER_POOL:?}"
        --space "${TENTACLE_SPACE:?}" --policy "${TENTACLE_POLICY:?}" --comms-style TentacleActive
        --server-comms-port "${TENTACLE_COMMS_PORT:-10943}" --home "$home" --run --force
        --boot-delay "${TENTACLE_BOOT_DELAY:-0}"
    )
    if [[ -n ${TENTACLE_PYTHONPATH:-} ]]; then
        export PYTHONPATH="$TENTACLE_PYTHONPATH${PYTHONPATH:+:$PYTHONPATH}"
    fi
    local launcher=(setsid)
    command -v setsid >/dev/null ||
        launcher=("$python" -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])')
    "${launcher[@]}" "$python" "${args[@]}" </dev/null >>"$logfile" 2>&1 &
    pid=$!
    echo "$pid" >"$pidfile"

    # Wait (bounded) until the simulator has checked its arguments and written its status, or has died.
    for ((i = 0; i < 300; i++)); do
        if [[ -s $statusfile ]] && is_ours "$pid"; then
            echo "started tentacle $name (pid $pid), log: $logfile"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null || [[ $(ps -o stat= -p "$pid" 2>/dev/null) == Z* ]]; then
            rc=0
            wait "$pid" || rc=$?
            echo "tentacle $name exited with status $rc during start; last lines of $logfile:" >&2
            tail -n 20 "$logfile" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "tentacle $name did not report its status within 30 s; last lines of $logfile:" >&2
    tail -n 20 "$logfile" >&2 || true
    signal_tentacle KILL "$pid"
    exit 1
}

case ${1:-} in
start) start ;;
stop) stop ;;
*) die "usage: $0 start|stop" ;;
esac
