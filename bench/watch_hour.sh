#!/bin/bash
# One long `tracer watch` on a running lab with a fault switched on and off: how its memory and
# disk behave over time, and whether the graph draws each outage at the right hop.
#   bench/watch_hour.sh LAB OUT_DIR [MINUTES] [TOGGLE_MINUTES]
# Needs root and `tracer lab up --name LAB` first. Writes to OUT_DIR: watch/ (the watch
# directory), rss.csv (time, VmRSS and VmHWM of tracer in kB, its child processes, open fds),
# disk.csv (time, bytes in the watch directory), faults.log (when each fault went on/off),
# watch.out (tracer's output). Faults alternate gw-forward-drop and esp-blocked.
set -u
lab=$1 out=$2 minutes=${3:-60} toggle=${4:-10}
mkdir -p "$out"
tracer() { python3 -m tracer "$@"; }
# python3 itself in the background (not the function's subshell): $! is the process measured.
python3 -m tracer watch west east --lab "$lab" --window 60s --interval 1 --keep-mb 20 --duration "${minutes}m" \
    --out "$out/watch" >"$out/watch.out" 2>&1 &
pid=$!
echo "time,rss_kb,hwm_kb,children,fds" >"$out/rss.csv"
echo "time,bytes" >"$out/disk.csv"
faults=(gw-forward-drop esp-blocked)
start=$(date +%s) n=0 on=0
while kill -0 "$pid" 2>/dev/null; do
    now=$(date +%s)
    if [ -r /proc/$pid/status ]; then
        rss=$(awk '/^VmRSS/{print $2}' /proc/$pid/status) hwm=$(awk '/^VmHWM/{print $2}' /proc/$pid/status)
        kids=$(ps --ppid "$pid" --no-headers | wc -l) fds=$(ls /proc/$pid/fd 2>/dev/null | wc -l)
        echo "$now,$rss,$hwm,$kids,$fds" >>"$out/rss.csv"
    fi
    echo "$now,$(du -sb "$out/watch" 2>/dev/null | cut -f1)" >>"$out/disk.csv"
    if [ $(( (now - start) / (toggle * 60) )) -gt $n ]; then
        n=$(( n + 1 ))
        if [ $on = 0 ]; then
            f=${faults[$(( (n / 2) % 2 ))]}
            tracer lab fault --name "$lab" "$f" >/dev/null && on=1 && echo "$now on $f" >>"$out/faults.log"
        else
            tracer lab fault --name "$lab" clear >/dev/null && on=0 && echo "$now off" >>"$out/faults.log"
        fi
    fi
    sleep 10
done
wait "$pid"; echo "exit $?" >>"$out/watch.out"
[ $on = 1 ] && tracer lab fault --name "$lab" clear >/dev/null && echo "$(date +%s) off (end)" >>"$out/faults.log"
