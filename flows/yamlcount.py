"""A fast first look at a recipe's YAML: is some node over :mod:`flows.yamlsafe`'s limits?

The limits are checked while the Python composer builds the node tree, and a node's size is known
only once it is complete, so a 10^5-key mapping was refused only after all of it had been composed
(1.3 s on libyaml's events, 5 s on the pure-Python scanner; ``bench/bench_yaml.py``). Composing,
not parsing, is where the time goes: libyaml gives every event of that document in 0.14 s. This
module walks libyaml's events once without building nodes, counting sizes as if aliases were
expanded exactly as the composer does, and stops at the first node the composer would refuse,
with the composer's own words, line and key path (so a document over a limit is refused in about
the time libyaml takes to reach the culprit).

It says nothing it is not sure of: where the composer would stop earlier for another reason (a
duplicate key in a mapping completed before the culprit, an undefined or duplicate anchor, a
malformed document, a second document) it returns and leaves the document to the composer.
"""

from __future__ import annotations

import yaml
from yaml.events import (AliasEvent, DocumentEndEvent, MappingEndEvent, MappingStartEvent, ScalarEvent,
                         SequenceEndEvent, SequenceStartEvent, StreamEndEvent)
from yaml.nodes import ScalarNode

try:
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml: the composer alone
    CParser = None

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_INT = "tag:yaml.org,2002:int"


class _Unsure(Exception):
    """The composer would stop before the culprit, or differently: leave the document to it."""


class _Limits:
    """What the composer of :mod:`.yamlsafe` checks, given by it (this module imports it not)."""

    def __init__(self, max_depth: int, max_nodes: int, max_chars: int, loader, error):
        self.max_depth, self.max_nodes, self.max_chars = max_depth, max_nodes, max_chars
        self.loader, self.error = loader, error  # a loader whose resolver and constructor read keys; the error class


def refuse_early(text: str, limits: _Limits) -> None:
    """Raise the ``limits.error`` (:class:`~flows.yamlsafe.YamlLimitError`) the composer would
    raise on ``text``, if it would raise one and nothing before it; return (having built
    nothing) otherwise."""
    if CParser is None:
        return
    try:
        _walk(text, limits)
    except (_Unsure, yaml.YAMLError):
        return


def _where(stack) -> str | None:
    """The composer's key path of the child now open in the innermost frame of ``stack``."""
    parts = []
    for f in stack:
        if f[0]:  # a mapping: its values are named by their key; its keys add nothing
            if f[5] % 2:
                parts.append(str(f[6]))
        else:
            parts.append(str(f[5]))
    if len(parts) > 8:
        parts = parts[:6] + [f"... ({len(parts)} levels)"]
    return ".".join(parts) or None


def _over(stack, nodes: int, chars: int, max_nodes: int, max_chars: int, error) -> None:
    """The composer's ``_check_open``: the innermost open collection, if over a limit already."""
    if not stack:
        return
    n, c = nodes - stack[-1][1], chars - stack[-1][2]
    if n > max_nodes or c > max_chars:
        what = f"{n:,} values" if n > max_nodes else f"{c:,} characters"
        limit = f"{max_nodes:,} values" if n > max_nodes else f"{max_chars:,} characters"
        raise error(f"expands to more than {limit} ({what} so far, once aliases are expanded)",
                    stack[-1][3].line + 1, _where(stack[:-1]))


def _walk(text: str, limits: _Limits) -> None:
    max_depth, max_nodes, max_chars, error = limits.max_depth, limits.max_nodes, limits.max_chars, limits.error
    helper = limits.loader  # its resolver and constructor read keys as the composer does
    resolvers = helper.yaml_implicit_resolvers
    nodes = chars = 0
    # open collections: [is mapping, nodes at start, chars at start, start mark, anchor,
    #                    children completed, last key (path part), keys seen (mappings)]
    stack: list[list] = []
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> expanded (nodes, chars)
    open_anchors: set[str] = set()
    parser = CParser(text)
    try:
        get = parser.get_event
        while True:
            ev = get()
            kind = type(ev)
            if kind is ScalarEvent or kind is SequenceStartEvent or kind is MappingStartEvent:
                if len(stack) + 1 > max_depth:
                    raise error(f"nested more than {max_depth} levels deep",
                                                  ev.start_mark.line + 1, _where(stack))
                anchor = ev.anchor
                if anchor is not None and (anchor in sizes or anchor in open_anchors):
                    raise _Unsure  # a duplicate anchor: said by the composer
                if kind is ScalarEvent:
                    value = ev.value
                    nodes += 1
                    chars += len(value)
                    if stack and (nodes - stack[-1][1] > max_nodes or chars - stack[-1][2] > max_chars):
                        _over(stack, nodes, chars, max_nodes, max_chars, error)
                    if len(value) > max_chars:
                        raise error(
                            f"expands to more than {max_chars:,} characters ({len(value):,} characters once "
                            "aliases are expanded)", ev.start_mark.line + 1, _where(stack))
                    if anchor is not None:
                        sizes[anchor] = (1, len(value))
                    if stack:
                        parent = stack[-1]
                        if parent[0] and parent[5] % 2 == 0:
                            parent[6] = value
                            if ev.tag is None and (not ev.implicit[0] or value[:1] not in resolvers):
                                if value in parent[7]:  # a plain string key (most): no resolving
                                    raise _Unsure
                                parent[7][value] = True
                            else:
                                _key_seen(parent, ev, value, helper, resolvers)
                        parent[5] += 1
                else:
                    if anchor is not None:
                        open_anchors.add(anchor)
                    stack.append([kind is MappingStartEvent, nodes, chars, ev.start_mark, anchor, 0, None, {}])
                    nodes += 1
            elif kind is SequenceEndEvent or kind is MappingEndEvent:
                frame = stack.pop()
                if frame[4] is not None:
                    open_anchors.discard(frame[4])
                    sizes[frame[4]] = (nodes - frame[1], chars - frame[2])
                if stack:
                    _over(stack, nodes, chars, max_nodes, max_chars, error)
                    parent = stack[-1]
                    if parent[0] and parent[5] % 2 == 0:
                        parent[6] = "?"
                    parent[5] += 1
            elif kind is AliasEvent:
                anchor = ev.anchor
                if anchor in open_anchors:
                    raise error("a recursive alias (a node that contains itself) is not allowed",
                                                  ev.start_mark.line + 1, _where(stack))
                if anchor not in sizes:
                    raise _Unsure  # an undefined alias: said by the composer
                n, c = sizes[anchor]
                nodes += n
                chars += c
                if stack:
                    if nodes - stack[-1][1] > max_nodes or chars - stack[-1][2] > max_chars:
                        _over(stack, nodes, chars, max_nodes, max_chars, error)
                    parent = stack[-1]
                    if parent[0] and parent[5] % 2 == 0:
                        raise _Unsure  # an alias as a key (rare): the composer reads it
                    parent[5] += 1
            elif kind is DocumentEndEvent or kind is StreamEndEvent:
                return
    finally:
        parser.dispose()


def _key_seen(mapping: list, ev, value: str, helper, resolvers) -> None:
    """Note a scalar key of ``mapping``; one the composer would call a duplicate (compared as the
    value it constructs to) leaves the document to the composer, which says so."""
    tag = ev.tag
    if tag is None or tag == "!":
        if ev.implicit[0] and (value[:1] if value else "") in resolvers:
            tag = helper.resolve(ScalarNode, value, ev.implicit)
        else:
            tag = _STR
    if tag == _MERGE:
        return
    if tag == _STR:
        key = value
    elif tag == _INT and value.isdigit() and (value[0] != "0" or value == "0"):
        key = int(value)  # (plain decimal: what the constructor makes of it, without its regexes)
    else:
        key = helper._key_value(ScalarNode(tag, value))
    seen = mapping[7]
    try:
        if key in seen:
            raise _Unsure
        seen[key] = True
    except TypeError:  # (unhashable: the constructor refuses it in its own words)
        pass
