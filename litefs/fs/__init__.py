"""The litefs filesystem: each node's merged view of image, sources, tmpfs and persistent store.

Modules, from the kernel inwards: :mod:`~litefs.fs.mount` (mount options, daemon, signals,
``--bypass`` binds), :mod:`~litefs.fs.ops` (the pyfuse3 adapter), :mod:`~litefs.fs.inodes`
(inode table with lookup counts), :mod:`~litefs.fs.view` (which layer answers a path: the
DESIGN table as code, on top of :func:`litefs.resolve.resolve`), :mod:`~litefs.fs.copyup`
(atomic copy-up), :mod:`~litefs.fs.layers` (every backing access, through directory fds) and
:mod:`~litefs.fs.control` (``refresh(mountpoint, paths)`` and ``change_plan`` for a running
mount, over a root-only xattr on the view's root).
"""
