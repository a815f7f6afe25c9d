"""YAML with limits: a recipe cannot expand into millions of nodes or nest hundreds of levels deep.

PyYAML shares one object per anchor, so an alias "bomb" (the YAML "billion laughs": each level
refers to the level below ten times) costs little to *parse* but explodes in anything that
walks the data (validation, hashing, JSON). The composer below counts, while it composes, the
size of every node *as if aliases were expanded* (memoised per node, so the count itself is
linear in the text) and the nesting depth, and stops at the first node over a limit, naming
its line and key path. Nothing recursive runs on data deeper than :data:`MAX_DEPTH`.

Limits (generous for any real recipe):

- :data:`MAX_DEPTH` levels of nesting (``DEPTHCRAFT_YAML_MAX_DEPTH``, default 64);
- :data:`MAX_NODES` nodes after alias expansion (``DEPTHCRAFT_YAML_MAX_NODES``, default 100,000);
- :data:`MAX_CHARS` characters of scalars after alias expansion (10 M);
- :data:`MAX_TEXT` characters of text (a recipe file over 10 MB is refused before parsing).

The composer (limits, duplicate keys) runs on libyaml's events where PyYAML has libyaml, 3x to 4x
faster than on its pure-Python scanner (10^5 keys: 5.2 s -> 1.6 s, ``bench/bench_yaml.py``); a
document libyaml calls malformed is read again by the pure-Python loader, whose error is said.

A collection is refused as soon as its own count so far is over a limit (not once complete), and
before composing, :func:`load` walks libyaml's events without building nodes
(:mod:`.yamlcount`) to refuse such a document in the composer's words: composing, not parsing,
is what took the time (a 10^5-key mapping: 1.3 s to refuse -> about 0.1 s).
"""

from __future__ import annotations

import os

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, ScalarEvent
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_CHARS = 10_000_000
MAX_TEXT = 10_000_000


class YamlLimitError(ValueError):
    """A document over a limit; ``line`` (1-based) and ``key`` (dotted path) say where."""

    def __init__(self, message: str, line: int | None, key: str | None):
        super().__init__(message)
        self.message, self.line, self.key = message, line, key


class YamlDuplicateKeyError(ValueError):
    """A mapping that names one key twice (YAML 1.2 forbids it; PyYAML keeps the last silently)."""

    def __init__(self, message: str, line: int | None, key: str | None):
        super().__init__(message)
        self.message, self.line, self.key = message, line, key


class _LimitedComposer(Composer):
    def __init__(self):
        super().__init__()
        self._depth = 0
        self._path: list = []
        self._size: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, chars) once expanded
        self._max_depth = _env_int("DEPTHCRAFT_YAML_MAX_DEPTH", MAX_DEPTH)
        self._max_nodes = _env_int("DEPTHCRAFT_YAML_MAX_NODES", MAX_NODES)
        # (nodes, chars) composed so far, as if aliases were expanded, and the collections still
        # open, each with the count at its start: a collection whose count so far is over a
        # limit is refused at once, not once complete (a 10^5-key mapping took 1.3 s to refuse)
        self._nodes = self._chars = 0
        self._open: list[tuple[int, int, object, int]] = []  # (nodes, chars, start mark, path length)

    def _where(self, depth: int | None = None) -> str | None:
        parts = [str(p) for p in self._path[:depth]]
        if len(parts) > 8:  # a path hundreds of levels long says nothing more than its start
            parts = parts[:6] + [f"... ({len(parts)} levels)"]
        return ".".join(parts) or None

    def compose_node(self, parent, index):
        if isinstance(index, int):
            self._path.append(index)
        elif isinstance(index, ScalarNode):
            self._path.append(index.value)
        elif index is not None:
            self._path.append("?")
        pushed = index is not None
        try:
            if self.check_event(AliasEvent):
                mark = self.peek_event().start_mark
                node = super().compose_node(parent, index)
                if id(node) not in self._size:  # an alias to a node still being composed
                    raise YamlLimitError("a recursive alias (a node that contains itself) is not allowed",
                                         mark.line + 1, self._where())
                self._grow(*self._size[id(node)])
                return node
            self._depth += 1
            if self._depth > self._max_depth:
                mark = self.peek_event().start_mark
                raise YamlLimitError(f"nested more than {self._max_depth} levels deep", mark.line + 1, self._where())
            if self.check_event(ScalarEvent):
                node = super().compose_node(parent, index)
                self._grow(1, len(node.value))
            else:
                self._open.append((self._nodes, self._chars, self.peek_event().start_mark, len(self._path)))
                self._grow(1, 0)
                node = super().compose_node(parent, index)
                self._open.pop()
                self._account(node)
                self._check_open()
                self._depth -= 1
                return node
            self._depth -= 1
            self._account(node)
            return node
        finally:
            if pushed:
                self._path.pop()

    def _grow(self, nodes: int, chars: int) -> None:
        """Count a node just composed (an alias: the node it names, expanded) into the collections
        still open, and refuse the innermost one if it is over a limit already."""
        self._nodes += nodes
        self._chars += chars
        self._check_open()

    def _check_open(self) -> None:
        # (only the innermost: an outer one over a limit is refused when its open part completes,
        # so the node named is the part of the recipe that is over, as when refused complete)
        if not self._open:
            return
        start_nodes, start_chars, mark, depth = self._open[-1]
        n, c = self._nodes - start_nodes, self._chars - start_chars
        if n > self._max_nodes or c > MAX_CHARS:
            what = f"{n:,} values" if n > self._max_nodes else f"{c:,} characters"
            limit = f"{self._max_nodes:,} values" if n > self._max_nodes else f"{MAX_CHARS:,} characters"
            raise YamlLimitError(f"expands to more than {limit} ({what} so far, once aliases are expanded)",
                                 mark.line + 1, self._where(depth))

    def _check_unique(self, node: MappingNode) -> None:
        # (a recipe with `name:` twice ran under the second name while the first was what the
        # reader saw; merge keys `<<` are YAML's way to override and are left to the constructor).
        # Keys are compared as the values they construct to, as the mapping will hold them:
        # `true` and `yes`, `1`, `1.0` and `0x1`, `null` and `~` are one key (the last one wins
        # silently), while `1` and `"1"` are two.
        seen: dict = {}  # constructed key -> (line, spelling)
        for k, _ in node.value:
            if not isinstance(k, ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
                continue
            line = k.start_mark.line + 1
            value = self._key_value(k)
            try:
                first = seen.get(value)
            except TypeError:  # (unhashable: the constructor refuses it in its own words)
                continue
            if first is not None:
                where = self._where()
                at = "twice on this line" if first[0] == line else f"first on line {first[0]}"
                same = "" if first[1] == k.value else f" (read as the same key as {first[1]!r})"
                raise YamlDuplicateKeyError(f"duplicate key {k.value!r}{same} ({at}); YAML keeps only the last: "
                                            "remove one", line,
                                            f"{where}.{k.value}" if where else k.value)
            seen[value] = (line, k.value)

    def _key_value(self, k: ScalarNode):
        """What the constructor makes of the scalar key ``k`` (its tag is resolved already: ``yes``
        is a bool, ``0x1`` an int); a tag it does not know, or a value it cannot construct, stays
        its own key (``(tag, text)``), refused by the constructor later if at all."""
        make = self.yaml_constructors.get(k.tag)  # (the loader is also the SafeConstructor)
        if make is None:
            return (k.tag, k.value)
        try:
            return make(self, k)
        except Exception:  # noqa: BLE001 - e.g. a malformed !!timestamp: said by the constructor itself
            return (k.tag, k.value)

    def _account(self, node) -> None:
        if isinstance(node, ScalarNode):
            size = (1, len(node.value))
        elif isinstance(node, SequenceNode):
            kids = [self._size[id(c)] for c in node.value]
            size = (1 + sum(k[0] for k in kids), sum(k[1] for k in kids))
        elif isinstance(node, MappingNode):
            self._check_unique(node)
            kids = [self._size[id(c)] for kv in node.value for c in kv]
            size = (1 + sum(k[0] for k in kids), sum(k[1] for k in kids))
        else:  # pragma: no cover - PyYAML has no other node kind
            size = (1, 0)
        self._size[id(node)] = size
        if size[0] > self._max_nodes or size[1] > MAX_CHARS:
            what = f"{size[0]:,} values" if size[0] > self._max_nodes else f"{size[1]:,} characters"
            limit = f"{self._max_nodes:,} values" if size[0] > self._max_nodes else f"{MAX_CHARS:,} characters"
            raise YamlLimitError(f"expands to more than {limit} ({what} once aliases are expanded)",
                                 node.start_mark.line + 1, self._where())


class LimitedSafeLoader(Reader, Scanner, Parser, _LimitedComposer, SafeConstructor, Resolver):
    """``yaml.SafeLoader`` with the limits of this module."""

    def __init__(self, stream):
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _LimitedComposer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)


try:  # libyaml's scanner and parser under the same Python composer (the checks above): 3x faster
    from yaml._yaml import CParser  # (10^5 keys: 5.6 s -> 1.8 s on the 2-core machine)

    class _FastLimitedSafeLoader(_LimitedComposer, CParser, SafeConstructor, Resolver):
        """:class:`LimitedSafeLoader` on libyaml's events (the composer, and so every limit and the
        duplicate-key check, is the Python one above)."""

        def __init__(self, stream):
            CParser.__init__(self, stream)
            _LimitedComposer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _FastLimitedSafeLoader = LimitedSafeLoader


def load(text: str):
    """``(node tree, data)`` of one YAML document within the limits.

    Raises :class:`YamlLimitError` (over a limit) or ``yaml.YAMLError`` (malformed).
    """
    if len(text) > MAX_TEXT:
        raise YamlLimitError(f"is {len(text):,} characters; a recipe may have at most {MAX_TEXT:,}", None, None)
    from . import yamlcount

    # a document over a limit: refused without composing it (10^5 keys: 20x faster)
    yamlcount.refuse_early(text, _limits())
    try:
        return _load(_FastLimitedSafeLoader, text)
    except yaml.YAMLError:
        if _FastLimitedSafeLoader is LimitedSafeLoader:
            raise
    # malformed for libyaml (which also stops at its own nesting limit, 1000 flow levels, while
    # scanning ahead of our depth limit): the pure-Python loader says it, in the words it always did
    return _load(LimitedSafeLoader, text)


def _limits():
    """This module's limits, as :mod:`.yamlcount` checks them (it does not import this module)."""
    from . import yamlcount

    return yamlcount._Limits(_env_int("DEPTHCRAFT_YAML_MAX_DEPTH", MAX_DEPTH), _env_int("DEPTHCRAFT_YAML_MAX_NODES",
                             MAX_NODES), MAX_CHARS, LimitedSafeLoader(""), YamlLimitError)


def _load(loader_class, text: str):
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return node, data


def safe_value(text: str):
    """One YAML value (a ``--set`` value) within the limits."""
    return load(text)[1]
