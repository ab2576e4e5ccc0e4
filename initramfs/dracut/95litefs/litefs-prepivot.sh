#!/bin/sh
# dracut pre-pivot hook: dracut's nfs module mounted the image on $NEWROOT; litefs takes over.
[ -r /etc/litefs.conf ] && . /etc/litefs.conf
export LITEFS_PYTHON NEWROOT
# LITEFS_HOOK: where the hook is when not installed by module-setup.sh (namespace test harness).
if ! LITEFS_MODE=dracut sh "${LITEFS_HOOK:-/usr/lib/litefs/litefs-boot.sh}"; then
    die "litefs: the node could not build its root; see the messages above"
fi
# The view's systemd must get SYSTEMD_IN_INITRD=0: its shutdown must not statfs "/" while the
# litefs daemon is stopped (litefs-boot.sh, switch_into_view, says why). dracut's init unsets
# every variable but a few before switch_root, then re-reads /tmp/export.orig (the
# environment the kernel gave it), so the line goes there.
echo "export SYSTEMD_IN_INITRD=0" >>/tmp/export.orig
export SYSTEMD_IN_INITRD=0
