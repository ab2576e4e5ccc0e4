#!/bin/bash
# dracut module "litefs": boot an xCAT-style statelite node into its litefs view.
#
# dracut's nfs module mounts root=nfs:<ip>:<dir>/rootimg:ro on $NEWROOT as usual; our pre-pivot
# hook (litefs-prepivot.sh) then runs the litefs boot hook in "dracut" mode: it moves the image
# aside, mounts the tmpfs, persistent store and litetree sources, fetches the plan from mountd
# (XCAT=), starts '@litefs mount' on $NEWROOT and lets dracut switch root.
#
# The litefs daemon is Python. Build the initramfs with LITEFS_PREFIX pointing at a
# self-contained install (e.g. 'python3 -m venv --copies /opt/litefs && /opt/litefs/bin/pip
# install litefs-statelite'); every file under it is installed with its library dependencies.
#   LITEFS_PREFIX=/opt/litefs dracut -a litefs -f initrd-statelite.gz

check() {
    require_binaries mount umount switch_root grep sleep || return 1
    # Only when asked for (-a litefs / add_dracutmodules+=" litefs ").
    return 255
}

depends() {
    echo nfs
}

installkernel() {
    hostonly='' instmods fuse
}

install() {
    inst_simple "$moddir/../../litefs-boot.sh" /usr/lib/litefs/litefs-boot.sh ||
        inst_simple "$moddir/litefs-boot.sh" /usr/lib/litefs/litefs-boot.sh
    inst_hook pre-pivot 90 "$moddir/litefs-prepivot.sh"
    inst_multiple mount umount grep sleep mkdir cat tail hostname chroot
    if [ -n "${LITEFS_PREFIX:-}" ] && [ -d "$LITEFS_PREFIX" ]; then
        find "$LITEFS_PREFIX" \( -type f -o -type l \) | while read -r f; do
            inst "$f"
        done
        echo "LITEFS_PYTHON=$LITEFS_PREFIX/bin/python" >"${initdir}/etc/litefs.conf"
    else
        dwarn "litefs: LITEFS_PREFIX not set; the litefs daemon must be found as python3 in the initramfs"
    fi
}
