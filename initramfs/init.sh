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
# Network: a real NFS root (root=nfs: or NFSROOT= without litefs.nfsmap=) needs an address
# before the hook mounts anything. The boot NIC is the one whose MAC BOOTIF= names (pxelinux's
# IPAPPEND 2, xNBA's imgargs), else ifname=/netdev= or the image's nodebootif (genimage -i),
# else the first NIC with a link; it gets its address by DHCP (busybox udhcpc), as xCAT's own
# initrd does, with retries and one console line each.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp /run /dev/pts /dev/shm
# /run is a tmpfs that the boot hook binds into the view, as dracut's is: systemd needs a
# writable /run from its first instant, and the image's own is read-only.
mount -t tmpfs -o mode=755,nosuid,nodev run /run

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

# net_wanted: the command line boots from a real NFS server (not the 9p/bind stand-in).
net_wanted() {
    case " $(cat /proc/cmdline) " in
        *" litefs.nfsmap="*) return 1 ;;
        *" root=nfs:"* | *" NFSROOT="*) return 0 ;;
    esac
    return 1
}

# boot_nic: the interface to bring up (see the header).
boot_nic() {
    want= name=
    set -f
    for arg in $(cat /proc/cmdline); do
        case "$arg" in
            BOOTIF=*) want=${arg#BOOTIF=} ;;
            ifname=*) name=${arg#ifname=}; name=${name%%:*} ;;
            netdev=*) name=${arg#netdev=} ;;
        esac
    done
    set +f
    if [ -n "$want" ]; then
        # BOOTIF=01-aa-bb-cc-dd-ee-ff (ARP type 01, then the MAC) or a plain MAC.
        want=$(echo "${want#01-}" | tr 'A-F-' 'a-f:')
        for dev in /sys/class/net/*; do
            [ "$(cat "$dev/address" 2>/dev/null)" = "$want" ] && { echo "${dev##*/}"; return; }
        done
        echo "litefs: no NIC has the MAC BOOTIF=$want names; trying the others" >&2
    fi
    [ -z "$name" ] && [ -r /etc/litefs/nodebootif ] && read -r name </etc/litefs/nodebootif
    case "$name" in */* | .* | *[!A-Za-z0-9_.:-]*) name= ;; esac  # an interface name only
    if [ -n "$name" ] && [ -d "/sys/class/net/$name" ]; then
        echo "$name"
        return
    fi
    for dev in /sys/class/net/*; do
        case "${dev##*/}" in lo | sit* | tunl* | ip6tnl*) continue ;; esac
        echo "${dev##*/}"
        return
    done
}

net_up() {
    net_wanted || return 0
    nic=
    tries=0
    while [ -z "$nic" ] && [ "$tries" -lt 20 ]; do  # NIC drivers probe asynchronously
        nic=$(boot_nic)
        [ -n "$nic" ] || sleep 0.5
        tries=$((tries + 1))
    done
    if [ -z "$nic" ]; then
        echo "litefs: no network interface found (is the NIC driver in the initrd? genimage -n)" >&2
        return 1
    fi
    ip link set lo up
    ip link set "$nic" up
    n=1
    while [ "$n" -le 5 ]; do
        if udhcpc -i "$nic" -s /litefs/udhcpc.sh -n -q -t 4 -T 2 >/dev/null 2>&1; then
            echo "litefs: $nic is $(ip -4 -o addr show dev "$nic" | awk '{print $4}') (DHCP)" >&2
            return 0
        fi
        echo "litefs: no DHCP answer on $nic (attempt $n of 5)" >&2
        n=$((n + 1))
    done
    echo "litefs: $nic got no address by DHCP; check the DHCP server and this node's mac table row" >&2
    return 1
}

net_up

exec /bin/sh /litefs/boot.sh
