#!/bin/sh
# litefs boot hook: turn a node's kernel command line into a running litefs root (POSIX sh,
# busybox-compatible; also sourced by the dracut module). One file (~600 lines) on purpose: the
# initramfs runs it with nothing else to source, and the dracut module sources the same file.
#
# Reads the xCAT kernel arguments (reference §5.1): root=nfs:IP:DIR[:ro,opts] or NFSROOT=IP:DIR,
# STATEMNT=[server:]/path, MNTOPTS=, XCAT=IP:PORT, NODE=, shell, init=; and litefs.pool= (the
# rest of a service-node pool). Then, in DESIGN's order:
#   1. mount the image read-only                 -> $LAYERS/image
#      (its server is the first SN of a pool and does not export it: the next SN of the pool
#      that does; a STATEMNT on the first SN and the plan then come from that SN too)
#   2. mount a tmpfs (size=25% of RAM; after step 4 site.litefs_tmpfs_size, checked)
#                                                -> $LAYERS/statelite (tmpfs layer in tmpfs/)
#   3. mount the persistent store: <statemnt>, mkdir <node>, umount, mount <statemnt>/<node>
#                                                -> $LAYERS/statelite/persistent
#   4. fetch the plan from mountd at XCAT= (retries with backoff; clear console message)
#   5. mount the litetree sources read-only      -> $LAYERS/statelite/mnt/<server><path>
#   6. start the litefs daemon on $NEWROOT with argv[0] "@litefs" (survives switch_root); its
#      Python starts as early as there is one (before step 1 when this root has $PY, else right
#      after it, from the image's node runtime) and waits for the go (initramfs/premount.py)
#   7. switch_root into the view (PID 1) or chroot (anything else).
# "debug" (or xcatdebugmode=1/2) traces the hook with set -x on the console.
# "shell" on the command line drops to a shell three times (after the mounts, after the plan,
# before switch_root), as the cookbook §7 describes. Every step is logged, shell-style, to
# /.statelite/statelite.log (tmpfs, so it lasts one boot).
#
# NFS stand-in: with litefs.nfsmap=DIR (or $LITEFS_NFSMAP) every "server:/path" is bind-mounted
# from DIR/<server>/<path> instead of NFS-mounted; without it, real `mount -t nfs` is used.
# Tests and the demo use the map (no NFS server on the build machine); the parsing of
# server:/path is the same either way.
#
# Environment knobs (for the namespace harness, qemu and dracut; all optional):
#   LITEFS_CMDLINE  file holding the command line (default /proc/cmdline)
#   LITEFS_PYTHON   python with litefs installed (default: python3 on PATH, else the image's
#                   own python3 and /opt/litefs venv, see node_runtime)
#   LITEFS_LAYERS   where layers are mounted in the initramfs (default /.litefs)
#   NEWROOT         where the view is mounted (default /sysroot)
#   LITEFS_MODE     "init" (default: mount everything and switch root) or "dracut" (image is
#                   already mounted on $NEWROOT; leave the switch to dracut)
#   LITEFS_BACKOFF  first retry delay in seconds (default 1; doubles, capped at 16)
#   LITEFS_RETRIES  attempts for each mount and for the plan (default 5)

set -u
set -f   # the command line is split on blanks; never glob it

NEWROOT=${NEWROOT:-/sysroot}
LAYERS=${LITEFS_LAYERS:-/.litefs}
SL=$LAYERS/statelite
LOG=/tmp/litefs-early.log
PY=${LITEFS_PYTHON:-python3}
RETRIES=${LITEFS_RETRIES:-5}
BACKOFF=${LITEFS_BACKOFF:-1}
MODE=${LITEFS_MODE:-init}
NFSMAP=${LITEFS_NFSMAP:-}
PLANFILE=
SHELL_PAUSE=0
INIT=/sbin/init
ROOTSPEC=
NFSROOT=
STATEMNT=
MNTOPTS=
XCAT=
POOL=
NODE=
NATIVE_WRITES=
TMPFS_SIZE_DEFAULT=25%  # of RAM, until the plan brings site.litefs_tmpfs_size
# The site CA (TLS to mountd) and the node's own certificate, when the initrd carries them
# (genimage adds the site CA; litefs-mkinitramfs --add ...:/etc/litefs/ca.pem, node.pem).
if [ -z "${LITEFS_CA:-}" ] && [ -r /etc/litefs/ca.pem ]; then export LITEFS_CA=/etc/litefs/ca.pem; fi
if [ -z "${LITEFS_CERT:-}" ] && [ -r /etc/litefs/node.pem ]; then export LITEFS_CERT=/etc/litefs/node.pem; fi

log() { echo "$*" >>"$LOG"; }

# "# [<seconds since kernel start>] <step>": where a slow boot spends its time.
stamp() {
    read -r _up _idle </proc/uptime 2>/dev/null || _up=?
    log "# [$_up] $*"
}

# Console line (what the admin watching rcons reads) that also lands in the log.
say() {
    echo "litefs: $*" >&2
    log "# $*"
}

# Log a command shell-style, then run it.
run() {
    log "$*"
    "$@"
}

emergency_shell() {
    if [ -t 0 ] || [ "${LITEFS_SHELL_ANYWAY:-0}" = 1 ]; then
        echo "litefs: dropping to a shell; 'exit' leaves it" >&2
        sh
    fi
}

die() {
    say "$*"
    if [ -n "${PREMOUNT:-}" ]; then
        kill "$PREMOUNT" 2>/dev/null  # the pre-started daemon will not be needed
        PREMOUNT=
    fi
    emergency_shell
    if [ "$$" = 1 ] && [ "$MODE" = init ]; then
        # PID 1 must not exit (kernel panic); stop the machine cleanly instead.
        sync
        poweroff -f 2>/dev/null
        sleep 1000000
    fi
    exit 1
}

pause() {
    [ "$SHELL_PAUSE" = 1 ] || return 0
    say "shell requested: pause $1 of 3 ($2); type 'exit' to continue booting"
    sh
}

# mounted_points: MOUNTED=" <every mount point> ", from one read of /proc/mounts by the shell
# itself (the steps after the mount ask several questions: one grep each costs a fork + exec).
# /proc/mounts escapes blanks; our mount points have none.
mounted_points() {
    MOUNTED=" "
    while read -r _src _mp _rest; do MOUNTED="$MOUNTED$_mp "; done 2>/dev/null </proc/mounts
}

retry() {
    # retry WHAT CMD...: up to $RETRIES attempts, sleeping BACKOFF, 2*BACKOFF, ... (cap 16 s).
    what=$1
    shift
    n=1
    delay=$BACKOFF
    while :; do
        if "$@"; then
            return 0
        fi
        if [ "$n" -ge "$RETRIES" ]; then
            return 1
        fi
        say "$what failed (attempt $n of $RETRIES); retrying in ${delay}s"
        sleep "$delay"
        n=$((n + 1))
        delay=$((delay * 2))
        [ "$delay" -gt 16 ] && delay=16
    done
}

# nfs_mount SERVER PATH TARGET OPTS: NFS mount, or a bind from the map (read-only when OPTS
# has "ro").
nfs_mount() {
    server=$1
    path=$2
    target=$3
    opts=$4
    if [ -n "$NFSMAP" ]; then
        src=$NFSMAP/$server$path
        if [ ! -d "$src" ]; then
            log "# $server:$path is not exported (no $src)"
            return 1
        fi
        run mount --bind "$src" "$target" || return 1
        case ",$opts," in
            *,ro,*) run mount -o remount,bind,ro "$target" || return 1 ;;
        esac
        return 0
    fi
    run mount -t nfs -o "$opts" "$server:$path" "$target"
}

parse_cmdline() {
    file=${LITEFS_CMDLINE:-/proc/cmdline}
    [ -r "$file" ] || die "cannot read the kernel command line ($file)"
    for arg in $(cat "$file"); do
        case "$arg" in
            root=nfs:*) ROOTSPEC=${arg#root=nfs:} ;;
            NFSROOT=*) NFSROOT=${arg#NFSROOT=} ;;
            STATEMNT=*) STATEMNT=${arg#STATEMNT=} ;;
            MNTOPTS=*) MNTOPTS=${arg#MNTOPTS=} ;;
            XCAT=*) XCAT=${arg#XCAT=} ;;
            NODE=*) NODE=${arg#NODE=} ;;
            shell) SHELL_PAUSE=1 ;;
            init=*) INIT=${arg#init=} ;;
            litefs.nfsmap=*) NFSMAP=${arg#litefs.nfsmap=} ;;
            litefs.plan=*) PLANFILE=${arg#litefs.plan=} ;;
            litefs.pool=*) POOL=${arg#litefs.pool=} ;;
            litefs.python=*) PY=${arg#litefs.python=} ;;
            debug|xcatdebugmode=1|xcatdebugmode=2) TRACE=$arg ;;
            litefs.localdisk=*) LOCALDISK=${arg#litefs.localdisk=} ;;
            litefs.nativewrites=1|litefs.nativewrites=yes) NATIVE_WRITES=1 ;;
        esac
    done
    # Cookbook §7.1: xCAT's statelite script has a "set -x" to uncomment. Here the kernel
    # argument "debug" (or xcatdebugmode=1/2, which nodeset writes for site.xcatdebugmode)
    # echoes every later command of the hook to the console.
    if [ -n "${TRACE:-}" ]; then
        echo "litefs: $TRACE on the kernel command line: tracing the boot hook (set -x)" >&2
        set -x
    fi
    # The dracut cmdline hook exports these too (kernel NAME=value args land in init's env).
    if [ -z "$NODE" ]; then
        NODE=$(hostname -s 2>/dev/null || hostname)
    fi
    # NODE is joined into $statemnt_path/$NODE: refuse anything but a hostname (as litefs/names.py).
    case "$NODE" in
        ''|-*|.*|*..*|*[!A-Za-z0-9_.-]*)
            die "NODE='$NODE' is not a valid node name (letters, digits, '-', '_', '.'; no leading '-' or '.', no '..'); fix NODE= on the kernel command line (nodeset) and rpower boot" ;;
    esac
}

# IMG_SERVER IMG_PATH IMG_OPTS from root=nfs:IP:DIR[:opts] or NFSROOT=IP:DIR (appends /rootimg).
parse_root() {
    if [ -n "$ROOTSPEC" ]; then
        IMG_SERVER=${ROOTSPEC%%:*}
        rest=${ROOTSPEC#*:}
        IMG_PATH=${rest%%:*}
        if [ "$rest" = "$IMG_PATH" ]; then
            IMG_OPTS=ro
        else
            IMG_OPTS=${rest#*:}
        fi
        case ",$IMG_OPTS," in *,ro,*) ;; *) IMG_OPTS="ro,$IMG_OPTS" ;; esac
        # A read-only image needs no NFS locks, and lockd cannot start before the node runs
        # rpcbind: without nolock the kernel's mount fails (ECONNREFUSED from lockd_up).
        case ",$IMG_OPTS," in *,lock,* | *,nolock,*) ;; *) IMG_OPTS="$IMG_OPTS,nolock" ;; esac
    elif [ -n "$NFSROOT" ]; then
        IMG_SERVER=${NFSROOT%%:*}
        IMG_PATH=${NFSROOT#*:}/rootimg
        IMG_OPTS=ro,nolock,rsize=32768,tcp,nfsvers=3,timeo=14
    else
        die "no root=nfs:<server>:<dir>/rootimg:ro or NFSROOT=<server>:<dir> on the kernel command line; run nodeset for $NODE"
    fi
    case "$IMG_SERVER" in
        "" | */* | "$ROOTSPEC$NFSROOT")
            die "image root '$ROOTSPEC$NFSROOT' is not <server>:<dir>; run nodeset for $NODE"
            ;;
    esac
    case "$IMG_PATH" in
        /*) ;;
        *) die "image root path '$IMG_PATH' is not absolute; run nodeset for $NODE" ;;
    esac
}

basic_mounts() {
    [ -d /proc/self ] || mount -t proc proc /proc
    [ -d /sys/kernel ] || mount -t sysfs sysfs /sys
    [ -c /dev/null ] || mount -t devtmpfs devtmpfs /dev
    [ -c /dev/fuse ] || modprobe fuse 2>/dev/null || true
    mkdir -p /tmp /run
}

# IMG_SERVERS: where the image may come from, in order. root=nfs:'s server; when that server
# is the node's service node (the XCAT= host, as nodeset writes for a pool), then each other
# SN of litefs.pool=: every SN of a pool keeps its own copy of /install (prsync), so a node
# whose first SN is down entirely still finds its image.
image_servers() {
    IMG_SERVERS=$IMG_SERVER
    [ -n "$POOL" ] && [ "${XCAT%%:*}" = "$IMG_SERVER" ] || return 0
    _ifs=$IFS
    IFS=,
    for _p in $POOL; do
        _h=${_p%%:*}
        # The host becomes part of a mount source (and, with the NFS map, of a path).
        case "$_h" in
            ''|-*|*[!A-Za-z0-9._-]*|*..*)
                say "warning: litefs.pool entry '$_p' is not <ip>:<port>; not an image server"
                continue ;;
        esac
        case " $IMG_SERVERS " in *" $_h "*) ;; *) IMG_SERVERS="$IMG_SERVERS $_h" ;; esac
    done
    IFS=$_ifs
}

# mount_image_pool: each of IMG_SERVERS once per round, rounds with backoff up to $RETRIES (as
# the plan fetch does over the pool); IMG_FROM is the server that had it.
mount_image_pool() {
    n=1
    delay=$BACKOFF
    while :; do
        set -- $IMG_SERVERS
        while [ $# -gt 0 ]; do
            _s=$1
            shift
            if nfs_mount "$_s" "$IMG_PATH" "$LAYERS/image" "$IMG_OPTS"; then
                IMG_FROM=$_s
                return 0
            fi
            if [ $# -gt 0 ] || [ "$n" -lt "$RETRIES" ]; then
                say "image server $_s does not export $IMG_PATH (or does not answer); trying ${1:-${IMG_SERVERS%% *} again} (next in the pool)"
            fi
        done
        [ "$n" -ge "$RETRIES" ] && return 1
        sleep "$delay"
        n=$((n + 1))
        delay=$((delay * 2))
        [ "$delay" -gt 16 ] && delay=16
    done
}

# follow_image_server: the image came from another SN of the pool than root=nfs: names. The
# persistent store the boot files put on that same SN ($noderes.xcatmaster:/nodedata) and
# the plan follow it, so the node's whole boot is served by one SN that answers.
follow_image_server() {
    say "image from $IMG_FROM:$IMG_PATH, not from $IMG_SERVER (failover)"
    case "$STATEMNT" in
        "$IMG_SERVER":/*)
            STATEMNT=$IMG_FROM:${STATEMNT#*:}
            say "persistent store from $STATEMNT, on the image's server (failover)"
            ;;
    esac
    _first= _rest=
    _ifs=$IFS
    IFS=,
    for _p in $POOL; do
        if [ -z "$_first" ] && [ "${_p%%:*}" = "$IMG_FROM" ]; then _first=$_p; else _rest="$_rest,$_p"; fi
    done
    IFS=$_ifs
    if [ -n "$_first" ]; then
        POOL=${_rest#,},$XCAT
        POOL=${POOL#,}
        XCAT=$_first
        say "asking mountd at $XCAT first (the image's server), then $POOL"
    fi
}

mount_image() {
    if [ "$MODE" = dracut ]; then
        # dracut's nfs module already mounted the image on $NEWROOT: move it aside.
        run mkdir -p "$LAYERS/image"
        run mount --move "$NEWROOT" "$LAYERS/image" || die "cannot move the image off $NEWROOT"
        return
    fi
    run mkdir -p "$LAYERS/image"
    image_servers
    if [ "$IMG_SERVERS" != "$IMG_SERVER" ]; then
        mount_image_pool ||
            die "cannot mount the image $IMG_PATH from any server of the pool ($IMG_SERVERS) after $RETRIES rounds; check the NFS exports on them, then rpower $NODE boot"
        [ "$IMG_FROM" = "$IMG_SERVER" ] || follow_image_server
        return
    fi
    retry "mounting the image $IMG_SERVER:$IMG_PATH" \
        nfs_mount "$IMG_SERVER" "$IMG_PATH" "$LAYERS/image" "$IMG_OPTS" ||
        die "cannot mount the image $IMG_SERVER:$IMG_PATH; check the NFS export on $IMG_SERVER, then rpower $NODE boot"
}

# tmpfs_size_ok SIZE: N% (1-100) or N, Nk, Nm, Ng (N >= 1), as litefs/tmpfs_size.py; "0" would
# be an unlimited tmpfs, which one user could fill until the node's RAM is gone.
tmpfs_size_ok() {
    num=${1%[kmgKMG%]}
    case "$num" in ''|*[!0-9]*) return 1 ;; esac
    case "$num" in *[!0]*) ;; *) return 1 ;; esac
    [ "${#num}" -le 15 ] || return 1
    case "$1" in *%) [ "$num" -le 100 ] || return 1 ;; esac
    return 0
}

mount_statelite_tmpfs() {
    run mkdir -p "$SL"
    # Bounded from the start (the default); apply_tmpfs_size sets the site's size once the
    # plan is here.
    run mount -t tmpfs -o "mode=755,size=$TMPFS_SIZE_DEFAULT" rw "$SL" || die "cannot mount the tmpfs for /.statelite"
    run mkdir -p "$SL/tmpfs/.statelite" "$SL/persistent" "$SL/mnt"
    # From now on the log lives where admins look for it: the view shows the tmpfs layer's
    # .statelite/{statelite.log,litefile,litetree} as /.statelite/...
    cat "$LOG" >>"$SL/tmpfs/.statelite/statelite.log" 2>/dev/null
    rm -f "$LOG"
    LOG=$SL/tmpfs/.statelite/statelite.log
}

apply_tmpfs_size() {
    size=$TMPFS_SIZE_DEFAULT
    [ -r "$SL/tmpfs.size" ] && read -r size <"$SL/tmpfs.size"
    if ! tmpfs_size_ok "$size"; then
        say "warning: tmpfs size '$size' is not N%, N, Nk, Nm or Ng (N >= 1); keeping $TMPFS_SIZE_DEFAULT"
        return 0
    fi
    [ "$size" = "$TMPFS_SIZE_DEFAULT" ] && return 0
    run mount -o "remount,size=$size" "$SL" ||
        say "warning: cannot resize the tmpfs layer to $size (more in use already?); it stays at $TMPFS_SIZE_DEFAULT"
}

mount_persistent() {
    if [ -z "$STATEMNT" ]; then
        say "no STATEMNT: this node has no persistent store (persistent files stay in RAM)"
        HAVE_PERSISTENT=0
        return
    fi
    case "$STATEMNT" in
        ?*:/*) ;;
        *)
            die "STATEMNT=$STATEMNT has no server: persistent files would silently live in RAM and be lost at reboot. Set statelite.statemnt to server:/path on the MN, run nodeset $NODE osimage, then rpower $NODE boot"
            ;;
    esac
    p_server=${STATEMNT%%:*}
    p_path=${STATEMNT#*:}
    p_opts=${MNTOPTS:-nolock,rsize=32768,tcp,timeo=14}
    p_opts=${p_opts#ro,}
    retry "mounting the persistent store $STATEMNT" \
        nfs_mount "$p_server" "$p_path" "$SL/persistent" "$p_opts" ||
        die "cannot mount the persistent store $STATEMNT. You are dead, rpower $NODE boot to play again."
    run mkdir -p "$SL/persistent/$NODE" || die "cannot create $NODE on the persistent store $STATEMNT"
    run umount -l "$SL/persistent"
    retry "mounting the persistent store $STATEMNT/$NODE" \
        nfs_mount "$p_server" "$p_path/$NODE" "$SL/persistent" "$p_opts" ||
        die "cannot mount $STATEMNT/$NODE. You are dead, rpower $NODE boot to play again."
    HAVE_PERSISTENT=1
}

# node_runtime: the Python that runs the daemons. $PY when this root has it (the namespace
# cluster lends the host's); else the image's own: genimage installs python3 and the /opt/litefs
# venv (litefs, pyfuse3, trio) in the image, and they run from the read-only image mount
# through the image's dynamic loader and libraries, so nothing of the initrd's (busybox is
# static) is mixed in. The image mount stays under the initramfs root after switch_root, so the
# daemons' later imports and library loads still find their files there.
node_runtime() {
    if PYX=$(command -v "$PY" 2>/dev/null); then
        RT_LDSO=
        return 0
    fi
    img=$LAYERS/image
    RT_LDSO=
    for l in "$img"/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
             "$img"/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1 \
             "$img"/usr/lib/powerpc64le-linux-gnu/ld64.so.2; do
        [ -e "$l" ] && { RT_LDSO=$l; break; }
    done
    PYX=$img/usr/bin/python3
    set +f
    site=
    for d in "$img"/opt/litefs/lib/python3*/site-packages; do
        [ -d "$d/litefs" ] && site=$d
    done
    set -f
    if [ -z "$RT_LDSO" ] || [ ! -e "$PYX" ] || [ -z "$site" ]; then
        die "no Python to run litefs: '$PY' is not in the initrd and the image has no node runtime (usr/bin/python3, opt/litefs with litefs in it, the dynamic loader); rebuild the image with genimage, or give litefs.python=<python> on the kernel command line"
    fi
    RT_HOME=$img/usr
    RT_PATH=$site
    RT_LIBS=${RT_LDSO%/*}
    log "# node runtime: the image's python3 ($PYX via $RT_LDSO), litefs from $site"
}

# py_exec ARGV0 ARGS...: replace this (sub)shell by the daemons' Python with argv[0] ARGV0
# ("@..." tells systemd to leave the process alone at switch_root and shutdown).
py_exec() {
    _a0=$1
    shift
    # Python finds its venv through PYTHONEXECUTABLE although argv[0] no longer names it.
    export PYTHONEXECUTABLE="$PYX"
    if [ -n "$RT_LDSO" ]; then
        # The loader runs the program named after its own options; LITEFS_LOADER tells the
        # daemon to do the same when it starts a helper (mountcmd.write_meta).
        export PYTHONHOME="$RT_HOME" PYTHONPATH="$RT_PATH" LD_LIBRARY_PATH="$RT_LIBS" \
            LITEFS_LOADER="$RT_LDSO" PYTHONDONTWRITEBYTECODE=1
        exec -a "$_a0" "$RT_LDSO" "$PYX" "$@"
    fi
    exec -a "$_a0" "$PY" "$@"
}

fetch_plan() {
    run mkdir -p "$NEWROOT"
    set -- --node "$NODE" --out "$SL" --retries "$RETRIES" --backoff "$BACKOFF"
    if [ -n "$PLANFILE" ]; then
        set -- "$@" --plan-file "$PLANFILE"
    else
        [ -n "$XCAT" ] || die "no XCAT=<mountd ip>:<port> on the kernel command line; run nodeset for $NODE"
        # Once the plan is written it forks into @litefs-watch: mountd's change announcements
        # ('litefs notify') then reach the running view. It waits for the view itself.
        # litefs.pool= (a service-node pool): the next servers to try when XCAT= is silent.
        [ -n "$POOL" ] && set -- "$@" --pool "$POOL"
        set -- "$@" --xcat "$XCAT" --watch "$NEWROOT" --ready "$SL/watch.ready" \
            --watch-log "$SL/watch.log"
        WATCH=1
    fi
    log "@litefs-watch -m litefs.initramfs.fetchplan $*"
    (py_exec @litefs-watch -m litefs.initramfs.fetchplan "$@") ||
        die "no plan for $NODE; cannot build its root. Fix the cause above, then rpower $NODE boot"
}

mount_sources() {
    [ -s "$SL/sources" ] || return 0
    # Lines: server<TAB>path<TAB>mntopts (server "-" = node-local path, nothing to mount).
    while IFS='	' read -r s_server s_path s_opts; do
        [ "$s_server" = - ] && continue
        target=$SL/mnt/$s_server$s_path
        run mkdir -p "$target"
        o=ro,nolock,tcp,nfsvers=3
        [ -n "$s_opts" ] && [ "$s_opts" != - ] && o="ro,$s_opts"
        retry "mounting litetree source $s_server:$s_path" \
            nfs_mount "$s_server" "$s_path" "$target" "$o" ||
            die "cannot mount litetree source $s_server:$s_path; check its export, then rpower $NODE boot"
    done <"$SL/sources"
}

# mount_args: MOUNT_ARGS_PERS, the persistent layer `litefs mount` gets this boot.
mount_args() {
    MOUNT_ARGS_PERS=$SL/persistent
    # xCAT without STATEMNT: "persistent" files live in RAM for this boot.
    [ "$HAVE_PERSISTENT" = 1 ] || MOUNT_ARGS_PERS=$SL/ram-persistent
}

# localdisk rows (xCAT's rc.localdisk mounts the partition linuximage.partitionfile names):
# litefs.localdisk=DEV on the kernel command line (linuximage.addkcmdline) names the node's
# local file system for them. Without it, or when DEV cannot be mounted, those paths live in
# the statelite tmpfs for this boot, and the console says so once the plan shows any.
mount_localdisk() {
    HAVE_LOCALDISK=0
    run mkdir -p "$SL/localdisk"
    [ -n "${LOCALDISK:-}" ] || return 0
    # Only a device under /dev, named with device-name characters: the value picks the sysfs
    # file read and the node made below, so it must not climb out of either folder.
    case "$LOCALDISK" in
        /dev/*..*|*[!A-Za-z0-9/_.:-]*|/dev/) LOCALDISK_BAD=$LOCALDISK; LOCALDISK=; return 0 ;;
        /dev/*) ;;
        *) LOCALDISK_BAD=$LOCALDISK; LOCALDISK=; return 0 ;;
    esac
    _name=${LOCALDISK#/dev/}
    if [ ! -b "$LOCALDISK" ] && [ -r "/sys/class/block/$_name/dev" ]; then
        # No udev in a small initramfs: make the device node from sysfs, as mdev would.
        IFS=: read -r _maj _min <"/sys/class/block/$_name/dev"
        run mknod "$LOCALDISK" b "$_maj" "$_min" || true
    fi
    if run mount "$LOCALDISK" "$SL/localdisk"; then
        HAVE_LOCALDISK=1
    fi
}

warn_localdisk() {
    [ "$HAVE_LOCALDISK" = 1 ] && return 0
    grep -q '"localdisk"' "$SL/plan.json" 2>/dev/null || return 0
    if [ -n "${LOCALDISK_BAD:-}" ]; then
        why="litefs.localdisk=$LOCALDISK_BAD is not a device under /dev (e.g. /dev/sda3)"
    elif [ -n "${LOCALDISK:-}" ]; then
        why="the local disk $LOCALDISK could not be mounted"
    else
        why="no litefs.localdisk=DEV on the kernel command line (set it in linuximage.addkcmdline)"
    fi
    say "warning: the plan has localdisk paths but $why; they are in tmpfs for this boot and lost at reboot"
}

prestart_litefs() {
    # Start the daemon's Python now, before the layers and the plan it will mount: it imports
    # what `litefs mount` needs (the longest step of the boot), then waits on $GO for
    # start_litefs. Its arguments are paths only; the persistent layer is the one mount_args
    # will name once mount_persistent is done (that step dies or mounts when STATEMNT is set),
    # and start_litefs checks that before the go.
    run mkdir -p "$NEWROOT" "$LAYERS"
    PREMOUNT_PERS=$SL/persistent
    [ -n "$STATEMNT" ] || PREMOUNT_PERS=$SL/ram-persistent
    GO=$LAYERS/mount.go
    rm -f "$GO"
    mkfifo "$GO" || return 0  # no fifo: start_litefs starts Python itself
    set -- mount --plan "$SL/plan.json" --image "$LAYERS/image" --tmpfs "$SL/tmpfs" \
        --persistent "$PREMOUNT_PERS" --source-root "$SL/mnt" --bypass --kmsg --log "$SL/litefs.log" "$NEWROOT"
    set -- "$@" --localdisk "$SL/localdisk"
    [ -n "$NATIVE_WRITES" ] && set -- "$@" --native-writes
    # argv[0] starting with "@" tells systemd not to kill us at shutdown/switch-root; python
    # finds its venv through PYTHONEXECUTABLE because argv[0] no longer names it.
    (py_exec @litefs -m litefs.initramfs.premount \
        --go "$GO" "$@" </dev/null) &
    PREMOUNT=$!
}

start_litefs() {
    mount_args
    [ "$HAVE_PERSISTENT" = 1 ] || run mkdir -p "$MOUNT_ARGS_PERS"
    if [ -n "$PREMOUNT" ] && [ "$PREMOUNT_PERS" != "$MOUNT_ARGS_PERS" ]; then
        # Started for another persistent layer than this boot has: not the mount we want.
        exec 9<>"$GO"
        echo stop >&9
        wait "$PREMOUNT"
        exec 9>&-
        PREMOUNT=
    fi
    # The watcher says "ready" in the fifo fetchplan made, once the view is mounted: open it
    # before the mount (read-write: never blocks), so that line cannot come before a reader.
    WATCH_FIFO=0
    if [ "$WATCH" = 1 ] && [ -p "$SL/watch.ready" ]; then
        exec 8<>"$SL/watch.ready"
        WATCH_FIFO=1
    fi
    set -- mount --plan "$SL/plan.json" --image "$LAYERS/image" --tmpfs "$SL/tmpfs" \
        --persistent "$MOUNT_ARGS_PERS" --source-root "$SL/mnt" --bypass --kmsg --log "$SL/litefs.log" "$NEWROOT"
    set -- "$@" --localdisk "$SL/localdisk"
    [ -n "$NATIVE_WRITES" ] && set -- "$@" --native-writes
    log "@litefs $*"
    # Without --foreground the command returns once the view is ready (bypass binds laid),
    # leaving the daemon behind, or prints why it could not mount.
    if [ -n "$PREMOUNT" ]; then
        # Read-write open never blocks, and holding it until the pre-started process is done
        # keeps "go" in the pipe even if that process opens it only after our write.
        exec 9<>"$GO"
        echo go >&9
        wait "$PREMOUNT"
        rc=$?
        exec 9>&-
        PREMOUNT=
        rm -f "$GO"
    else
        (py_exec @litefs -m litefs.tools.litefs_cli "$@" </dev/null 8<&-)
        rc=$?
    fi
    [ "$rc" = 0 ] || die "the litefs daemon could not mount $NEWROOT (its log: $SL/litefs.log)"
    mounted_points
    case "$MOUNTED" in
        *" $NEWROOT "*) ;;
        *) die "litefs reported ready but $NEWROOT is not mounted" ;;
    esac
    log "# litefs is serving $NEWROOT"
}

# wait_watcher: until litefs-watch says "ready" on fd 8 (start_litefs opened its fifo), at most
# 30 s: read -t where the shell has it (busybox ash, bash); else (dash: status 2, nothing read)
# a timer writes "timeout" into the same fifo, so the read always ends.
wait_watcher() {
    word=
    if [ "$WATCH_FIFO" = 1 ]; then
        read -t 30 -r word <&8 2>/dev/null
        if [ "$?" = 2 ] && [ -z "$word" ]; then
            (sleep 30 & s=$!; trap 'kill "$s" 2>/dev/null; exit 0' TERM; wait "$s"; echo timeout >&8) &
            timer=$!
            read -r word <&8 || word=
            kill "$timer" 2>/dev/null
            wait "$timer" 2>/dev/null
        fi
        exec 8<&-
    fi
    [ "$word" = ready ] || say "litefs-watch is not ready; image updates need a reboot"
}

finish_root() {
    # The view itself presents /.statelite (tmpfs, persistent, mnt, log, litefile, litetree).
    # MOUNTED: start_litefs read the mount table once the view was up.
    for d in dev proc sys run; do
        case "$MOUNTED" in *" /$d "*) ;; *) continue ;; esac
        if [ -d "$NEWROOT/$d" ]; then
            run mount --rbind "/$d" "$NEWROOT/$d" || say "could not bind /$d into the view"
        fi
    done
}

# keep_api_mounts (dracut mode): dracut's switch_root moves /proc into the view, but the
# daemons stay in this root and reach their layers through /proc/self/fd: a second proc
# mounted on top is the one moved, the first stays here. (/dev is not needed again: the
# daemon opened /dev/fuse and /dev/kmsg at start.)
keep_api_mounts() {
    run mount -t proc proc /proc || say "warning: cannot keep a /proc for the litefs daemon"
}

switch_into_view() {
    say "switching root into the litefs view on $NEWROOT (init $INIT)"
    # systemd-shutdown stops every process (kill -1 SIGSTOP, the litefs daemon too) and, in
    # that window, asks in_initrd(): without this it statfs()es "/", a request to the stopped
    # daemon, and the poweroff hangs for ever. The view is not an initrd, so the answer is the
    # same; it is only given up front (systemd reads SYSTEMD_IN_INITRD, PID 1 passes it on).
    export SYSTEMD_IN_INITRD=0
    if [ "$$" = 1 ]; then
        exec switch_root "$NEWROOT" "$INIT"
    fi
    exec chroot "$NEWROOT" "$INIT"
}

litefs_boot() {
    HAVE_PERSISTENT=0
    WATCH=0
    PREMOUNT=
    basic_mounts
    parse_cmdline
    say "booting $NODE"
    # The image names no host (genimage removes /etc/hostname): systemd keeps this one. Only
    # in a machine's own boot: as PID 1 or under dracut (a namespace node has its own UTS
    # namespace), never when a test sources this file on the host.
    if [ "$$" = 1 ] || [ "$MODE" = dracut ]; then hostname "$NODE" 2>/dev/null; fi
    [ "$MODE" = dracut ] || parse_root
    if [ "$MODE" = dracut ]; then
        # The layers' mount points (and the daemon's go pipe) on a tmpfs of their own: dracut's
        # switch_root deletes the initramfs's files and would say "failed to unlink .litefs".
        run mkdir -p "$LAYERS"
        mounted_points
        case "$MOUNTED" in
            *" $LAYERS "*) ;;
            *) run mount -t tmpfs -o mode=0755,size=1m litefs-layers "$LAYERS" ;;
        esac
    fi
    # The daemon's Python starts at once when this root has one ($PY); else right after the
    # image mount, from the image's node runtime.
    if PYX=$(command -v "$PY" 2>/dev/null); then
        RT_LDSO=
        prestart_litefs
    fi
    stamp mount_image
    mount_image
    if [ -z "$PREMOUNT" ]; then
        node_runtime
        prestart_litefs
    fi
    stamp mount_statelite_tmpfs
    mount_statelite_tmpfs
    stamp mount_persistent
    mount_persistent
    mount_localdisk
    pause 1 "image, tmpfs and persistent store are mounted under $LAYERS"
    stamp fetch_plan
    fetch_plan
    apply_tmpfs_size
    warn_localdisk
    stamp mount_sources
    mount_sources
    pause 2 "plan fetched, litetree sources mounted under $SL/mnt"
    stamp start_litefs
    start_litefs
    [ "$MODE" = dracut ] || finish_root  # dracut moves /dev, /proc, /sys, /run itself
    case "$MOUNTED" in
        *" $NFSMAP "*)
            # Every export we need is bound by now; the daemons stay in this root, so drop the
            # map: like NFS, the node keeps only its own mounts (<statemnt>/<node>, not
            # <statemnt>).
            [ -n "$NFSMAP" ] && run umount -l "$NFSMAP" ;;
    esac
    # The watcher sets itself up on the view while the steps above run; it must have loaded
    # what it needs from the initramfs before switch_root deletes it.
    [ "$WATCH" = 1 ] && wait_watcher
    pause 3 "the litefs view is on $NEWROOT; next: switch_root"
    if [ "$MODE" = dracut ]; then
        keep_api_mounts
        return 0
    fi
    stamp switch_root
    switch_into_view
}

# Sourced by the dracut hook with LITEFS_SOURCED=1; run otherwise.
if [ "${LITEFS_SOURCED:-0}" != 1 ]; then
    litefs_boot
fi
