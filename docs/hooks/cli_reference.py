"""MkDocs hook: the command-line reference, generated from the parsers the CLI builds (so it
cannot drift from the option declarations). A page holding ``<!-- cli-reference -->`` gets
one section per command and sub-command: its description and a table of its flags."""

from __future__ import annotations

import argparse
import html

MARKER = "<!-- cli-reference -->"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _default(action: argparse.Action) -> str:
    if action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
        return ""
    return f"`{action.default}`"


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        names = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
        if action.metavar and action.option_strings:
            names += f" `{action.metavar}`"
        elif action.choices and action.option_strings:
            names += " {" + ", ".join(f"`{c}`" for c in action.choices) + "}"
        text = (action.help or "").replace("%(default)s", str(action.default)).replace("%%", "%")
        text = html.escape(" ".join(text.split())).replace("|", "\\|")
        rows.append(f"| {names} | {text} |")
    return rows


def reference() -> str:
    """Markdown for every command of ``mimicache`` and the original scripts' flags."""
    from mimicache.cli.main import build_parser

    out: list[str] = []

    def section(parser: argparse.ArgumentParser, path: list[str], level: int) -> None:
        subs = _subcommands(parser)
        title = " ".join(["mimicache", *path])
        out.append(f"{'#' * level} `{title}`\n")
        if parser.description:
            out.append(html.escape(" ".join(parser.description.split())) + "\n")
        rows = _flags(parser)
        if rows:
            out.append("| flag | meaning |\n| --- | --- |")
            out.extend(rows)
            out.append("")
        for name, sub in subs.items():
            section(sub, [*path, name], min(level + 1, 4))

    root = build_parser()
    for name, sub in _subcommands(root).items():
        section(sub, [name], 2)
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())
