#!/bin/sh
# dracut pre-pivot hook: dracut's nfs module mounted the image on $NEWROOT; litefs takes over.
[ -r /etc/litefs.conf ] && . /etc/litefs.conf
export LITEFS_PYTHON NEWROOT
if ! LITEFS_MODE=dracut sh /usr/lib/litefs/litefs-boot.sh; then
    die "litefs: the node could not build its root; see the messages above"
fi
