"""The litefs filesystem: each node's merged view of image, sources, tmpfs and persistent store.

Modules, from the kernel inwards:

* :mod:`~litefs.fs.mount`: mount options, daemon, signals, ``--bypass`` binds;
* :mod:`~litefs.fs.ops`: the pyfuse3 adapter (handlers only);
* :mod:`~litefs.fs.control`: the control protocol over root xattrs, both ends
  (``refresh(mountpoint, paths)``, ``change_plan``);
* :mod:`~litefs.fs.coherence`: kernel cache invalidation, refresh, mounts over the view;
* :mod:`~litefs.fs.tree`: inodes, the entries behind them, numbers, attributes;
* :mod:`~litefs.fs.inodes`: the inode table with lookup counts and the numbering scheme;
* :mod:`~litefs.fs.policy`: the write side's decisions, pure (EXDEV, ENOTEMPTY, whiteouts);
* :mod:`~litefs.fs.writes`: the write side's actions (which upper layer, copy-up, bookkeeping);
* :mod:`~litefs.fs.attrs`: setattr on a pinned inode, permission checks;
* :mod:`~litefs.fs.view`: which layer answers a path (the DESIGN table as code, on top of
  :func:`litefs.resolve.resolve`);
* :mod:`~litefs.fs.copyup`: atomic copy-up;
* :mod:`~litefs.fs.layers`: every backing access and mutation, through directory fds;
* :mod:`~litefs.fs.markers`: whiteout marker names; :mod:`~litefs.fs.imagelayout`: a liteimg'd
  image; :mod:`~litefs.fs.fillwatch`: the tmpfs fill warning; :mod:`~litefs.fs.meta_writer`:
  ``/.statelite/litefile`` and friends.
"""
