#!/bin/busybox sh
# migbench Debian guest, stage 1 (the small initramfs): load the virtio and ext4 modules, mount
# the root disk (/dev/vda, the run's qcow2 overlay) and hand over to the image's own
# /etc/migbench/init, the same init.sh as the initramfs guest plus the hooks of this image.
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s
while read -r mod; do
    [ -n "$mod" ] && insmod "$mod" 2>/dev/null
done < /etc/modules.list
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do
    sleep 0.05
    i=$((i + 1))
done
if ! mount -t ext4 -o rw,noatime /dev/vda /newroot; then
    echo "@mb error msg=rootfs-mount-failed-/dev/vda" > /dev/ttyS0
    while :; do sleep 3600; done
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /etc/migbench/init
