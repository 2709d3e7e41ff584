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

# Network: mb.net=ip:10.251.0.2/24[,dev:eth0]. The NIC is virtio-net on a tap bridged on the host.
if spec=$(cmdline_opt net); then
    addr=""
    dev=eth0
    for kv in $(echo "$spec" | tr , ' '); do
        case "${kv%%:*}" in
            ip) addr=${kv#*:} ;;
            dev) dev=${kv#*:} ;;
            *) say "@mb error msg=net-unknown-key-${kv%%:*}" ;;
        esac
    done
    i=0
    while [ ! -e "/sys/class/net/$dev" ] && [ $i -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if [ -z "$addr" ]; then
        say "@mb error msg=net-needs-ip"
    elif ip addr add "$addr" dev "$dev" && ip link set "$dev" up; then
        mac=$(cat "/sys/class/net/$dev/address" 2>/dev/null)
        say "@mb net-ready dev=$dev ip=$addr mac=$mac"
    else
        say "@mb error msg=net-setup-failed-$dev"
    fi
fi

# Ping: mb.ping=mode:udp,port:7777 starts the UDP echo responder; mode:icmp needs only the kernel.
if spec=$(cmdline_opt ping); then
    mode=udp
    port=7777
    for kv in $(echo "$spec" | tr , ' '); do
        case "${kv%%:*}" in
            mode) mode=${kv#*:} ;;
            port) port=${kv#*:} ;;
            *) say "@mb error msg=ping-unknown-key-${kv%%:*}" ;;
        esac
    done
    case "$mode" in
        udp) start_workload ping /bin/udpecho --port "$port" ;;
        icmp) say "@mb ping-ready mode=icmp" ;;
        *) say "@mb error msg=ping-mode-must-be-udp|icmp" ;;
    esac
fi

# fio: mb.fio=key:value,... becomes fio --key=value (a "/" in a value becomes ","), on /dev/vda,
# time based and endless; fiomon turns fio's JSON status into one "@mb fio" line per second.
if spec=$(cmdline_opt fio); then
    if [ ! -x /bin/fio ] || [ ! -x /bin/fiomon ]; then
        say "@mb error msg=workload-fio-not-in-this-image"
    else
        i=0
        while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if [ ! -b /dev/vda ]; then
            say "@mb error msg=fio-no-disk-/dev/vda"
        else
            fio_args=""
            for kv in $(echo "$spec" | tr , ' '); do
                fio_args="$fio_args --${kv%%:*}=$(echo "${kv#*:}" | tr / ,)"
            done
            # shellcheck disable=SC2086
            start_workload fio /bin/fiomon /bin/fio --name=mb --filename=/dev/vda --time_based \
                --runtime=1000000 --group_reporting $fio_args
        fi
    fi
fi

# Hooks of richer images (the Debian guest's services, workloads/debian/services.sh): shell
# fragments sourced here with the helpers above. The initramfs has none.
for hook in /etc/migbench/init.d/*.sh; do
    [ -f "$hook" ] && . "$hook"
done

# PID 1 must never exit.
while :; do
    sleep 3600
done
