"""The ``litefs`` command: one entry point, subcommands implemented in ``cmd_*`` modules.

Subcommand modules are imported only when used, so ``litefs mount`` at boot does not pay for
the database layer. A module (``litefs.tools.cmd_*``, or ``litefs.initramfs.mountcmd`` for the
node's own commands) provides ``setup_<name>(parser) -> run`` for each subcommand it
holds: it adds its arguments and returns the function that runs it.
"""

from __future__ import annotations

import importlib
import sys

from litefs.tools.common import Parser, run_main

from litefs.wellknown import version

# name -> (module, one-line summary). Order is the --help order. The node's own commands
# (mount, umount, refresh) live with the rest of the node side, in litefs.initramfs.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("litefs.tools.cmd_demo", "set up and run the demo cluster (sample image, tables, mountd, nodes)"),
    "db": ("litefs.tools.cmd_db", "create or upgrade the litefs/xCAT tables (db init | db upgrade | db status)"),
    "plan": ("litefs.tools.cmd_plan", "print a node's plan (rules, sources, statemnt) as text or JSON"),
    "explain": ("litefs.tools.cmd_fs", "say which rule and layer answer for a path on a node, without mounting"),
    "mount": ("litefs.initramfs.mountcmd", "mount a node's merged view (the litefs filesystem)"),
    "umount": ("litefs.initramfs.mountcmd", "unmount a litefs view"),
    "refresh": ("litefs.initramfs.mountcmd", "make image or source changes visible on a running mount"),
    "inspect": ("litefs.tools.cmd_fs", "mount a node's effective tree read-only on the MN to look around"),
    "ca": ("litefs.tools.cmd_ca", "site certificate authority for mountd (ca init | ca issue)"),
    "notify": ("litefs.tools.cmd_notify", "tell running nodes to invalidate paths after an image change"),
    "image-exec": ("litefs.tools.cmd_image", "run a command inside an image (apt-get install ...) and tell "
                   "running nodes what changed"),
    "classic-boot": ("litefs.tools.cmd_classic", "emulate a stock xCAT node's rc.statelite over a liteimg'd image"),
}


def _parser() -> Parser:
    p = Parser(
        prog="litefs",
        description="Diskless statelite nodes over a FUSE overlay. "
        "Run 'litefs COMMAND --help' for a command's options.",
    )
    p.add_argument("--version", action="version", version=f"litefs {version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (_module, summary) in SUBCOMMANDS.items():
        sub.add_parser(name, help=summary, description=summary, add_help=False)
    return p


def _body(argv: list[str]) -> int:
    if not argv or argv[0] not in SUBCOMMANDS:
        parser = _parser()
        if not argv:
            parser.print_help(sys.stderr)
            return 2
        parser.parse_args(argv)  # prints the usage error / help and exits
        return 2
    name, rest = argv[0], argv[1:]
    module_name, summary = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    sub = Parser(prog=f"litefs {name}", description=summary)
    run = getattr(module, "setup_" + name.replace("-", "_"))(sub)
    return int(run(sub.parse_args(rest)) or 0)


def main(argv: list[str] | None = None) -> int:
    return run_main("litefs", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
