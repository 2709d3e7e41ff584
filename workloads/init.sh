#!/bin/busybox sh
# migbench guest /init (busybox sh). Loads the virtio modules, then starts the workloads named on
# the kernel command line as mb.<name>=key:value,key:value (see workloads/README.md).
# Every line meant for the harness goes to the serial port and starts with "@mb ".

/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /dev/pts /dev/shm
mount -t tmpfs tmpfs /tmp

SERIAL=/dev/ttyS0
say() { echo "$*" > "$SERIAL"; }

# Raw, no echo: "verify" typed by the host must not come back, output keeps plain \n.
stty -F "$SERIAL" raw -echo 2>/dev/null

read -r up _ < /proc/uptime
echo > "$SERIAL"  # end whatever partial line firmware left on the console
say "@mb boot uptime=$up"

loaded=0
if [ -f /etc/modules.list ]; then
    while read -r mod; do
        [ -n "$mod" ] || continue
        if insmod "$mod" 2>/dev/null; then
            loaded=$((loaded + 1))
        fi
    done < /etc/modules.list
fi
say "@mb modules loaded=$loaded"

ip link set lo up 2>/dev/null
hostname migbench-guest

# mb.<name>=k:v,k:v -> value of "mb.<name>" from /proc/cmdline (empty if absent).
cmdline_opt() {
    for word in $(cat /proc/cmdline); do
        case "$word" in
            "mb.$1="*) echo "${word#mb.$1=}"; return 0 ;;
        esac
    done
    return 1
}

# Run a workload in the background; report its exit code when it ends.
# The first argument is the workload name, the rest is the command.
start_workload() {
    name=$1
    shift
    (
        "$@" < "$SERIAL" > "$SERIAL" 2>&1
        say "@mb exit workload=$name code=$?"
    ) &
}

writer_args() {
    args=""
    old_ifs=$IFS
    IFS=,
    for kv in $1; do
        key=${kv%%:*}
        val=${kv#*:}
        case "$key" in
            ws) flag=--ws-mib ;;
            rate) flag=--rate-mib ;;
            pattern) flag=--pattern ;;
            threads) flag=--threads ;;
            interval) flag=--interval-ms ;;
            *) flag="--$key" ;;  # the writer rejects it with an @mb error line
        esac
        args="$args $flag $val"
    done
    IFS=$old_ifs
    echo "$args"
}

if spec=$(cmdline_opt writer); then
    # shellcheck disable=SC2046
    start_workload writer /bin/writer $(writer_args "$spec")
fi

# Later workloads follow the same convention, e.g. mb.ping=port:7 or mb.fio=job:randwrite.
for other in ping fio; do
    if cmdline_opt "$other" > /dev/null; then
        say "@mb error msg=workload-$other-not-in-this-image"
    fi
done

# PID 1 must never exit.
while :; do
    sleep 3600
done
