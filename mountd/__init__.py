"""mountd: the service booting nodes ask for their plan (``litefs.mountd``).

Where things live: :mod:`.codec` (the JSON wire protocol, pure; the node's client uses it too),
:mod:`.xcatd_codec` (the classic xcatd XML stock nodes speak, pure), :mod:`.identity` (peer
address/certificate → node, pure), :mod:`.policy` (the policy table, pure), :mod:`.catalog`
(tables from the database, cached until they change), :mod:`.server` (trio listeners and
sessions), :mod:`.tlsstream` (server-side TLS), :mod:`.hub` (subscriptions), :mod:`.workers`
(``--workers``), :mod:`.pki` (site CA and the server's TLS context), :mod:`.cli` (the ``mountd``
command). What nodes and admin tools call is :mod:`litefs.initramfs.client`.
Importing this package loads none of them; import the module you need.
"""
