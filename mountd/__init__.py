"""mountd: the service booting nodes ask for their plan (``litefs.mountd``).

Where things live: :mod:`.codec` (the wire protocol, pure: JSON lines and classic xcatd XML),
:mod:`.identity` (peer address/certificate → node, pure), :mod:`.policy` (the policy table,
pure), :mod:`.catalog` (tables from the database, cached until they change), :mod:`.server`
(trio listeners and sessions), :mod:`.tlsstream` (server-side TLS), :mod:`.hub`
(subscriptions), :mod:`.workers` (``--workers``), :mod:`.pki` (site CA and TLS contexts),
:mod:`.client` (what nodes and admin tools call), :mod:`.cli` (the ``mountd`` command).
Importing this package loads none of them; import the module you need.
"""
