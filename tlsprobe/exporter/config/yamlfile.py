"""The bounded YAML reader both configuration files share (tlsprobe.yml and web-config.yml).

A file is read by the bounded regular-file reader (`tlsprobe.probe.files`), decoded as UTF-8,
and parsed with PyYAML's safe loader extended by a duplicate-key check: PyYAML silently keeps
the last of two equal keys, and a silently overridden key is a lost setting (or, in
web-config.yml, a lost user).  Every failure is one `YamlFileError` whose message is a single
line naming the place (line and column) and never quoting the document: no value, key, alias or
tag name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import yaml

from tlsprobe.probe import files

MAX_YAML_BYTES: Final = 1 << 20
"""Larger files are refused before parsing: no real configuration comes close."""


class YamlFileError(ValueError):
    """The file cannot be read or is not acceptable YAML; `message` is one line.

    For a syntax error (`syntax` true), `where` is the "line L, column C" the parser points at
    ("" when it gave none) and `problem` its complaint without any quoted text ("" when the
    complaint could quote the document).
    """

    def __init__(
        self, message: str, *, syntax: bool = False, where: str = "", problem: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.syntax = syntax
        self.where = where
        self.problem = problem


class _Strict(yaml.constructor.SafeConstructor):
    """PyYAML's safe constructor, refusing duplicate keys (which it would silently override);
    the duplicate is not quoted (a misplaced secret may be a key)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` then a key of its own is an override, not a duplicate
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key; the safe loader reports it itself
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, "duplicate key", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return int(super().construct_yaml_int(node))
        except ValueError:
            # Python refuses integers over 4,300 digits; PyYAML lets the ValueError escape.
            raise yaml.constructor.ConstructorError(
                None, None, "integer too large", node.start_mark
            ) from None

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, OverflowError):
            raise yaml.constructor.ConstructorError(
                None, None, "not a valid date or time (quote it if it is text)", node.start_mark
            ) from None


class _StrictLoader(_Strict, yaml.SafeLoader):
    """The pure-Python parser: the reference, and the one whose error messages are reported."""


_LOADERS: tuple[type[_Strict], ...] = (_StrictLoader,)
if yaml.__with_libyaml__:

    class _StrictCLoader(_Strict, yaml.CSafeLoader):
        """The same constructors over libyaml's parser, about four times faster on a large
        tlsprobe.yml; any failure is parsed again by `_StrictLoader` for its message."""

    _LOADERS = (_StrictCLoader, _StrictLoader)

for _loader in _LOADERS:
    _loader.add_constructor("tag:yaml.org,2002:int", _Strict.construct_yaml_int)  # type: ignore[type-var]
    _loader.add_constructor("tag:yaml.org,2002:timestamp", _Strict.construct_yaml_timestamp)  # type: ignore[type-var]


def read_yaml(path: Path, *, max_bytes: int = MAX_YAML_BYTES) -> object:
    """The document in `path` as plain dicts, lists and scalars; any problem a YamlFileError."""
    try:
        raw = files.read(path, max_bytes)
    except files.FileError as exc:
        raise YamlFileError(exc.message) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise YamlFileError(f"not UTF-8 text (line {line})") from None
    return _load(text, _LOADERS)


def _load(text: str, loaders: tuple[type[_Strict], ...]) -> object:
    """`text` parsed by the first of `loaders` (the fast one where libyaml is there); on any
    failure, parsed again by the last, the pure-Python `_StrictLoader`, so that every message
    (and every verdict) is the one the reference parser gives."""
    # Subclasses of SafeConstructor: only plain YAML types, never arbitrary Python objects.
    if loaders[0] is not loaders[-1]:
        try:
            return yaml.load(text, Loader=loaders[0])  # type: ignore[arg-type]  # noqa: S506
        except Exception:  # noqa: S110 - the reference parser below says what is wrong
            pass
    try:
        return yaml.load(text, Loader=loaders[-1])  # type: ignore[arg-type]  # noqa: S506
    except yaml.MarkedYAMLError as exc:
        raise _marked(exc) from None
    except yaml.YAMLError:
        raise YamlFileError("YAML error", syntax=True) from None
    except (ValueError, OverflowError):
        # A scalar PyYAML cannot convert, beyond those the loader catches itself.
        raise YamlFileError("YAML error: a value cannot be read", syntax=True) from None
    except RecursionError:
        raise YamlFileError("YAML nesting is too deep") from None


_HINTS = {
    "while scanning an alias": "a value starting with '*' must be quoted, e.g. \"*.contoso.com\"",
    "found undefined alias": "a value starting with '*' must be quoted",
    "while scanning a tag": "a value starting with '!' must be quoted",
    # Only a local tag (`!word`): `!!python/...` is an attack, not an unquoted value.
    "could not determine a constructor for the tag '!": "a value starting with '!' must be quoted",
}
_QUOTED = re.compile(r"'(?!<[a-z ]+>')[^']*'|\"[^\"]*\"")
"""What PyYAML's complaint quotes from the document; its own token names ('<stream end>') stay."""


def _marked(exc: yaml.MarkedYAMLError) -> YamlFileError:
    """Where the YAML breaks, without PyYAML's snippet of the line (it may hold a secret), and
    without what the complaint quotes from the document (an alias or tag name is the rest of
    an unquoted value: a password starting with `*` or `!`)."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    hint = next((h for k, h in _HINTS.items() if k in f"{exc.context} {exc.problem}"), None)
    problem = _QUOTED.sub("(not shown)", problem)
    if hint is not None:
        problem = f"{problem}: {hint}"
    if mark is None:
        return YamlFileError(f"YAML error: {problem}", syntax=True, problem=problem)
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    message = f"YAML error at {where}: {problem}"
    return YamlFileError(message, syntax=True, where=where, problem=problem)
