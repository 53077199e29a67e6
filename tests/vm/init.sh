#!/bin/bash
# PID 1 of the test VM: mount the kernel filesystems, load the modules the data plane needs, run
# /test.sh and print one verdict line on the serial console, then power off. The host reads
# only the verdict line; everything else is there for the person reading a failure.
/bin/busybox --install -s /bin
# busybox applets come last so they never shadow the real iproute2, ping or tc.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mkdir -p /var/run /run/netns
ip link set lo up
echo "waylume-vm: init at $(cut -d' ' -f1 /proc/uptime)s"

rc=1
# shellcheck disable=SC2046  # one module name a word
if modprobe -a $(grep -v '^#' /etc/waylume-vm-modules); then
    /test.sh && rc=0
else
    echo "waylume-vm: modprobe failed"
fi

echo "waylume-vm: modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
echo "waylume-vm: done at $(cut -d' ' -f1 /proc/uptime)s"
if [ "$rc" = 0 ]; then echo "WAYLUME-VM-RESULT: PASS"; else echo "WAYLUME-VM-RESULT: FAIL"; fi
sync
poweroff -f
