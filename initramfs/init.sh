#!/bin/sh
# /init of the standalone litefs initramfs (built by tools/mkinitramfs.py): basic mounts,
# kernel modules (fuse, 9p, virtio) in dependency order, optional 9p shares, then the boot
# hook /litefs/boot.sh as PID 1.
#
# Extra kernel arguments read here (the hook reads the xCAT ones):
#   litefs.9p=TAG:DIR[:ro],...   mount virtio-9p share TAG on DIR (qemu -virtfs ...,mount_tag=TAG)
#   litefs.hostbinds=/usr,/p,... with litefs.9p=...:/host: bind /host/<p> on /<p> read-only, so
#                                a Python runtime on the host's disk runs in the guest (/lib and
#                                /lib64 become links into /usr, as on Debian)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp /run /dev/pts /dev/shm

if [ -r /etc/litefs/modules ]; then
    while read -r mod; do
        [ -n "$mod" ] || continue
        insmod "/lib/modules/$mod" 2>/dev/null || echo "litefs: could not load $mod" >&2
    done </etc/litefs/modules
fi

set -f
NINEP=
HOSTBINDS=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        litefs.9p=*) NINEP=${arg#litefs.9p=} ;;
        litefs.hostbinds=*) HOSTBINDS=${arg#litefs.hostbinds=} ;;
    esac
done

IFS=,
for spec in $NINEP; do
    tag=${spec%%:*}
    rest=${spec#*:}
    dir=${rest%%:*}
    opts=trans=virtio,version=9p2000.L,msize=262144
    [ "$rest" != "$dir" ] && opts="$opts,${rest#*:}"
    mkdir -p "$dir"
    mount -t 9p -o "$opts" "$tag" "$dir" || echo "litefs: cannot mount 9p share $tag on $dir" >&2
done
if [ -n "$HOSTBINDS" ]; then
    # Modules are loaded: /lib can become the host's (Debian: /lib -> usr/lib).
    rm -rf /lib /lib64
    ln -s usr/lib /lib
    ln -s usr/lib64 /lib64
    for p in $HOSTBINDS; do
        mkdir -p "$p"
        mount --bind "/host$p" "$p" && mount -o remount,bind,ro "$p"
    done
fi
unset IFS
set +f

exec /bin/sh /litefs/boot.sh
