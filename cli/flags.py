"""A job command's flags, generated from its options' pydantic fields (speech.options).

Each field ``some_name`` of either part becomes ``--some-name`` (its dest is the field name):
the type or choices come from the annotation (``Literal`` -> choices, ``bool`` ->
``--x/--no-x``, lists comma-separated, ``int | ActorPool`` -> ``N`` or ``MIN:MAX``, the parsers
of :mod:`cli.values`), the help from ``Field(description=...)`` with the default appended. One
field is the positional argument (INPUT, TRAIN); ``output`` is ``-o/--output``. Flags default
to None, so a value from ``--config`` stands unless the flag is given.

The flags are added when the command's parser is first used (:class:`CommandParser`): building
them imports pydantic and the options, which ``speech --help`` and the other commands skip.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from cli import values

if typing.TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from speech.options import JobOptions

#: Titles of the two groups of flags, by part (the rows part first).
_GROUPS = ("what decides the output rows (recorded in OUTPUT/_job.json; a resumed run must agree)",
           "where and how the job runs (may change between runs)")


class CommandParser(argparse.ArgumentParser):
    """The parser of a command; a job command's (``options=`` the name of its options class in
    speech.options) gets a flag per option field the first time it parses or prints help."""

    def __init__(self, *args: Any, options: str | None = None, positional: str = "", metavar: str = "",
                 flag_aliases: Mapping[str, Sequence[str]] | None = None, **kwargs: Any):
        # (flag_aliases: add_parser takes `aliases` itself, for the command's own names.)
        super().__init__(*args, **kwargs)
        self._pending = (options, positional, metavar, flag_aliases) if options else None

    def add_flags(self) -> None:
        """Add the option flags now (once)."""
        if self._pending is not None:
            name, positional, metavar, aliases = self._pending
            self._pending = None
            import speech.options

            add_option_flags(self, getattr(speech.options, name), positional=positional, metavar=metavar,
                             aliases=aliases)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self.add_flags()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.add_flags()
        return super().format_help()

    def format_usage(self) -> str:
        self.add_flags()
        return super().format_usage()


def add_option_flags(parser: argparse.ArgumentParser, options: type[JobOptions], *, positional: str, metavar: str,
                     aliases: Mapping[str, Sequence[str]] | None = None) -> None:
    """Add a flag for every field of ``options`` to ``parser``: ``positional`` (a field) is the
    positional argument shown as ``metavar``; ``aliases``: field -> older flag names it keeps."""
    aliases = aliases or {}
    for title, part in zip(_GROUPS, options.parts().values()):
        group = parser.add_argument_group(title)
        for name, field in part.model_fields.items():
            if name == positional:
                many = typing.get_origin(_required(field.annotation)) is list
                parser.add_argument(name, nargs="+" if many else None, metavar=metavar, help=_help(field))
            elif name == "output":
                group.add_argument("-o", "--output", required=True, help=_help(field))
            else:
                flags = [f"--{name.replace('_', '-')}", *aliases.get(name, ())]
                group.add_argument(*flags, dest=name, default=None, help=_help(field), **_kind(field.annotation))


def option_values(args: argparse.Namespace, options: type[JobOptions]) -> dict[str, Any]:
    """The options given on the command line: field -> value (None: not given)."""
    return {name: getattr(args, name) for name in options.fields()}


def _required(annotation: Any) -> Any:
    """``annotation`` without ``| None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) < len(typing.get_args(annotation)):
            return members[0] if len(members) == 1 else typing.Union[tuple(members)]  # noqa: UP007 - a runtime union of a variable tuple
    return annotation


def _parsers() -> dict[Any, tuple[Callable[[str], Any], str]]:
    """Annotations (None stripped) read by one of cli.values' parsers, with their metavar; other
    types are int, float, str, bool or a Literal."""
    from speech.options import ActorPool

    return {
        int | ActorPool: (values.actors, "N|MIN:MAX"),
        int | Literal["all"]: (values.layer, "N|all"),
        list[str]: (values.comma_list, "A,B,..."),
        tuple[float, ...]: (str, "X[,X...]"),  # the field's validator reads the list
        dict[str, float]: (values.resources, "NAME=AMOUNT,..."),
    }


def _kind(annotation: Any) -> dict[str, Any]:
    """argparse keywords (type, choices, action, metavar) for a field's annotation."""
    required = _required(annotation)
    parsers = _parsers()
    if required in parsers:
        parse, metavar = parsers[required]
        return {"type": parse, "metavar": metavar}
    if required is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(required) is Literal:
        return {"choices": typing.get_args(required)}
    if required in (int, float):
        parse = values.number_or_none(required) if required is not annotation else required
        return {"type": parse, "metavar": "N" if required is int else "X"}
    if required is str:
        return {}
    raise TypeError(f"no flag for an option of type {annotation}: add a parser to cli.flags._parsers")


def _help(field: FieldInfo) -> str:
    from pydantic_core import PydanticUndefined

    text = field.description or ""
    default = field.default
    if default is not PydanticUndefined and default is not None and "(default" not in text:
        if isinstance(default, bool):
            shown = "on" if default else "off"
        elif isinstance(default, tuple):
            shown = ",".join(f"{v:g}" for v in default)
        else:
            shown = f"{default:g}" if isinstance(default, float) else str(default)
        text = f"{text} (default: {shown})"
    return text.replace("%", "%%")  # argparse formats help strings
