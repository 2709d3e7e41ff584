# migbench Debian guest: the services hook, sourced by init.sh (in /etc/migbench/init.d/) with
# its helpers (say, cmdline_opt, start_workload). Each service starts only when the kernel
# command line names it, and says "@mb <name>-ready" once it answers on its port.
#   mb.redis=port:6379,maxmem:256      redis-server, no persistence, all addresses
#   mb.memcached=port:11211,maxmem:64  memcached, TCP only
#   mb.stress=vm:1,bytes:64,method:all stress-ng --vm (bytes in MiB), endless

mb_kv() {  # mb_kv SPEC KEY DEFAULT -> the value of KEY in k:v,k:v SPEC
    for kv in $(echo "$1" | tr , ' '); do
        if [ "${kv%%:*}" = "$2" ]; then echo "${kv#*:}"; return 0; fi
    done
    echo "$3"
}

mb_wait_port() {  # mb_wait_port NAME CHECK-COMMAND...: retry for 20 s, then say ready or error
    name=$1
    shift
    i=0
    while [ $i -lt 200 ]; do
        if "$@" 2>/dev/null; then
            say "@mb $name-ready"
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    say "@mb error msg=$name-did-not-answer"
}

mb_memcached_up() {
    printf 'version\r\n' | nc -w 1 127.0.0.1 "$1" | grep -q '^VERSION'
}

if spec=$(cmdline_opt redis); then
    port=$(mb_kv "$spec" port 6379)
    maxmem=$(mb_kv "$spec" maxmem 256)
    echo 1 > /proc/sys/vm/overcommit_memory  # what redis asks for (its fork-less use needs none)
    start_workload redis /usr/bin/redis-server --port "$port" --bind 0.0.0.0 \
        --protected-mode no --save "" --appendonly no --daemonize no --loglevel warning \
        --maxmemory "${maxmem}mb"
    mb_wait_port redis sh -c "redis-cli -p $port ping | grep -q PONG" &
fi

if spec=$(cmdline_opt memcached); then
    port=$(mb_kv "$spec" port 11211)
    maxmem=$(mb_kv "$spec" maxmem 64)
    start_workload memcached /usr/bin/memcached -u root -p "$port" -U 0 -l 0.0.0.0 \
        -m "$maxmem" -t 1
    mb_wait_port memcached mb_memcached_up "$port" &
fi

if spec=$(cmdline_opt stress); then
    start_workload stress /usr/bin/stress-ng --vm "$(mb_kv "$spec" vm 1)" \
        --vm-bytes "$(mb_kv "$spec" bytes 64)M" --vm-method "$(mb_kv "$spec" method all)" \
        --vm-keep --timeout 0 --quiet
    say "@mb stress-ready"
fi

# fio on the data disk: mb.datafio=key:value,... as init.sh's mb.fio (a "/" in a value becomes
# ","), but on /dev/vdb: in this guest /dev/vda is the root disk (its virtio-blk device comes
# first on the PCI bus), which init.sh's fio would write over. Same fiomon lines as mb.fio.
if spec=$(cmdline_opt datafio); then
    i=0
    while [ ! -b /dev/vdb ] && [ $i -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if [ ! -b /dev/vdb ]; then
        say "@mb error msg=fio-no-data-disk-/dev/vdb"
    else
        fio_args=""
        for kv in $(echo "$spec" | tr , ' '); do
            fio_args="$fio_args --${kv%%:*}=$(echo "${kv#*:}" | tr / ,)"
        done
        # shellcheck disable=SC2086
        start_workload fio /usr/bin/fiomon /usr/bin/fio --name=mb --filename=/dev/vdb \
            --time_based --runtime=1000000 --group_reporting $fio_args
    fi
fi
