#!/bin/bash
# dracut module "litefs": boot an xCAT-style statelite node into its litefs view.
#
# dracut's nfs module mounts root=nfs:<ip>:<dir>/rootimg:ro on $NEWROOT as usual (DHCP on the
# BOOTIF= NIC first); our pre-pivot hook (litefs-prepivot.sh) then runs the litefs boot hook in
# "dracut" mode: it moves the image aside, mounts the tmpfs, persistent store and litetree
# sources, fetches the plan from mountd (XCAT=), starts '@litefs mount' on $NEWROOT and lets
# dracut switch root.
#
# The litefs daemon is Python, and it is the image's: genimage installs python3 and the
# /opt/litefs venv in the image, and the hook runs them from the read-only image mount through
# the image's own dynamic loader (litefs-boot.sh, node_runtime). So the initramfs carries no
# Python, only the hook, the tools it calls and the site CA:
#   LITEFS_CA_DIR=/etc/litefs/ca dracut -a litefs --kver <image kernel> \
#       --kmoddir <rootimg>/lib/modules/<image kernel> -f initrd-statelite.gz

check() {
    require_binaries mount umount switch_root grep sleep mkfifo || return 1
    # Only when asked for (-a litefs / add_dracutmodules+=" litefs ").
    return 255
}

depends() {
    echo nfs network
}

installkernel() {
    hostonly='' instmods fuse nfs nfsv3 nfsv4 overlay
}

install() {
    inst_simple "$moddir/../../litefs-boot.sh" /usr/lib/litefs/litefs-boot.sh ||
        inst_simple "$moddir/litefs-boot.sh" /usr/lib/litefs/litefs-boot.sh
    inst_hook pre-pivot 90 "$moddir/litefs-prepivot.sh"
    inst_multiple mount umount grep sleep mkdir cat rm mkfifo kill hostname chroot sync mknod \
        poweroff
    # The site CA: the plan fetch speaks TLS to mountd (mountd's --ca-dir).
    ca=${LITEFS_CA_DIR:-/etc/litefs/ca}/ca.pem
    if [ -r "$ca" ]; then
        inst_simple "$ca" /etc/litefs/ca.pem
    else
        dwarn "litefs: no site CA at $ca: the node asks mountd in plain TCP (mountd refuses that unless --insecure)"
    fi
    if [ -n "${LITEFS_PYTHON:-}" ]; then
        echo "LITEFS_PYTHON=$LITEFS_PYTHON" >"${initdir}/etc/litefs.conf"
    fi
}
