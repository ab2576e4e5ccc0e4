"""Man pages and bash and zsh completion generated from the commands' own argparse parsers, so the
documentation cannot drift from the options (``tools/setup.sh`` installs both).

Each console script builds its parser inside its body; :func:`all_parsers` runs the body with
``parse_args`` intercepted to obtain the parser without running the command. ``litefs`` gets
every subcommand's parser attached, as ``litefs COMMAND --help`` would build it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from litefs.tools import common, litefs_cli

from litefs.wellknown import version


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def _scripts() -> dict[str, str]:
    """Console script name -> 'module:function', from the installed distribution (or the
    source tree's pyproject.toml when run from a checkout that is not installed)."""
    try:
        eps = metadata.distribution("litefs-statelite").entry_points
        found = {ep.name: ep.value for ep in eps if ep.group == "console_scripts"}
        if found:
            return found
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    return dict(tomllib.loads(pyproject.read_text())["project"]["scripts"])


def _capture(target: str) -> argparse.ArgumentParser | None:
    module_name, func = target.split(":")
    main = getattr(importlib.import_module(module_name), func)
    real = argparse.ArgumentParser.parse_args

    def grab(self: argparse.ArgumentParser, *a: object, **k: object) -> argparse.Namespace:
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = grab  # type: ignore[method-assign,assignment]
    try:
        # run_main passes only LitefsError and friends on as exit statuses; ours gets out.
        main(["--help"])
    except _Captured as c:
        return c.parser
    except SystemExit:
        pass  # a command that prints its own help without argparse (liteimg -h)
    finally:
        argparse.ArgumentParser.parse_args = real  # type: ignore[method-assign]
    return None


def litefs_parser() -> argparse.ArgumentParser:
    """``litefs`` with every subcommand's real arguments."""
    p = common.Parser(prog="litefs", description=litefs_cli._parser().description)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=common.Parser)
    for name, (module_name, summary) in litefs_cli.SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=summary, description=summary)
        module = importlib.import_module(module_name)
        getattr(module, "setup_" + name.replace("-", "_"))(sp)
    return p


def all_parsers() -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}
    for name, target in sorted(_scripts().items()):
        parser = litefs_parser() if name == "litefs" else _capture(target)
        if parser is not None:
            out[name] = parser
    return out


def walk(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The parser and every subparser below it, with its command words."""
    yield path or parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{path or parser.prog} {name}")


def _roff(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line
                     for line in text.splitlines())


def man_page(name: str, parser: argparse.ArgumentParser) -> str:
    date = datetime.date.today().isoformat()
    out = [f'.TH "{name.upper()}" 1 "{date}" "litefs {version()}" "litefs"', ".SH NAME",
           _roff(f"{name} - {(parser.description or '').split('. ')[0]}")]
    for words, p in walk(parser, name):
        out += [".SH " + ("SYNOPSIS" if words == name else _roff(words.upper())),
                _roff(p.format_usage().removeprefix("usage: ").strip())]
        if p.description:
            out += [".PP", _roff(p.description)]
        for action in p._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            label = ", ".join(action.option_strings) or action.metavar or action.dest
            out += [".TP", f"\\fB{_roff(str(label))}\\fR", _roff(action.help or "")]
        if p.epilog:
            out += [".PP", _roff(p.epilog)]
    return "\n".join(out) + "\n"


def bash_completion(parsers: dict[str, argparse.ArgumentParser]) -> str:
    """One bash script: each command completes its options and subcommand words."""
    lines = ["# bash completion for litefs commands (generated by litefs.tools.docgen)"]
    for name, parser in parsers.items():
        fn = "_litefs_" + name.replace("-", "_")
        lines += [f"{fn}() {{", '  local cur="${COMP_WORDS[COMP_CWORD]}" words=""',
                  '  local cmd="${COMP_WORDS[*]:0:COMP_CWORD}"', "  case \"$cmd\" in"]
        for words, cand in _command_words(parser, name):
            pattern = words.replace(" ", "\\ ")
            lines.append(f"    {pattern}|{pattern}\\ *) words=\"{' '.join(cand)}\" ;;")
        lines += ["  esac", '  COMPREPLY=($(compgen -W "$words" -- "$cur"))',
                  '  [ ${#COMPREPLY[@]} -eq 0 ] && COMPREPLY=($(compgen -f -- "$cur"))', "}",
                  f"complete -F {fn} {name}"]
    return "\n".join(lines) + "\n"


def _command_words(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, list[str]]]:
    """(command path, the words that may follow it), longest path first so that a case
    statement matches "litefs db" before "litefs"."""
    for words, p in sorted(walk(parser, name), key=lambda wp: -len(wp[0])):
        opts = [o for a in p._actions for o in a.option_strings]
        subs = [c for a in p._actions if isinstance(a, argparse._SubParsersAction) for c in a.choices]
        yield words, subs + opts


def zsh_completion(parsers: dict[str, argparse.ArgumentParser]) -> str:
    """One zsh function file (``_litefs`` on $fpath) for every command: subcommand words and
    options from the parsers, file names where neither fits (as the bash script does)."""
    lines = [f"#compdef {' '.join(parsers)}",
             "# zsh completion for litefs commands (generated by litefs.tools.docgen)",
             "local cmd=${words[1]:t} w; local -a cand",
             "for w in ${words[2,CURRENT-1]}; do cmd+=\" $w\"; done", "case $cmd in"]
    for name, parser in parsers.items():
        for words, cand in _command_words(parser, name):
            pattern = words.replace(" ", "\\ ")
            lines.append(f"  ({pattern}|{pattern}\\ *) cand=({' '.join(cand)}) ;;")
    lines += ["esac", "compadd -a cand && return 0", "_files"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = common.Parser(prog="litefs-docgen", description="Write man pages and bash and zsh completion "
                      "generated from the commands' parsers.")
    p.add_argument("--man", metavar="DIR", help="write NAME.1 for every command into DIR")
    p.add_argument("--bash", metavar="FILE", help="write the bash completion script to FILE")
    p.add_argument("--zsh", metavar="FILE",
                   help="write the zsh completion function to FILE (name it _litefs, on $fpath)")
    args = p.parse_args(argv)
    parsers = all_parsers()
    if args.man:
        Path(args.man).mkdir(parents=True, exist_ok=True)
        for name, parser in parsers.items():
            (Path(args.man) / f"{name}.1").write_text(man_page(name, parser))
    if args.bash:
        Path(args.bash).parent.mkdir(parents=True, exist_ok=True)
        Path(args.bash).write_text(bash_completion(parsers))
    if args.zsh:
        Path(args.zsh).parent.mkdir(parents=True, exist_ok=True)
        Path(args.zsh).write_text(zsh_completion(parsers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
