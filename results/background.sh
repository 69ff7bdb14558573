#!/usr/bin/env bash
# A job that outlives one call of the device tool: `start` runs it in a session of its own (setsid), which the
# tool leaves running when its call returns; later calls on the same, still-warm machine `wait` for it and
# bring back what it has written so far.
#   results/background.sh start DIR COMMAND...   run COMMAND in the background, its output in DIR/job.log and its
#                                                exit status, once it ends, in DIR/job.exit
#   results/background.sh wait DIR SECONDS DEST  wait until the job has ended or SECONDS have passed, print the
#                                                last line of every log in DIR, and pack DIR without checkpoints
#                                                (*.pt) into DEST/<name of DIR>.tar.gz
set -u
case ${1:-} in
start)
    dir=$2; shift 2
    mkdir -p "$dir"
    setsid -f bash -c '"$@" >"$0/job.log" 2>&1; echo $? >"$0/job.exit"' "$dir" "$@" </dev/null >/dev/null 2>&1
    ;;
wait)
    dir=$2; seconds=$3; dest=$4
    end=$((SECONDS + seconds))
    while [[ ! -f $dir/job.exit ]] && ((SECONDS < end)); do sleep 2; done
    for log in "$dir"/*.log "$dir"/*/*.log; do [[ -f $log ]] && printf '%s: %s\n' "${log#"$dir"/}" "$(tail -n 1 "$log")"; done
    if [[ -f $dir/job.exit ]]; then echo "job ended, exit $(cat "$dir/job.exit")"; else echo "job still running"; fi
    mkdir -p "$dest"
    tar -czf "$dest/$(basename "$dir").tar.gz" --exclude='*.pt' -C "$(dirname "$dir")" "$(basename "$dir")"
    ;;
*)
    echo "usage: $0 start DIR COMMAND... | wait DIR SECONDS DEST" >&2
    exit 2
    ;;
esac
