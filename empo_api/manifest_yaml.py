"""Read manifests as kubectl does, and refuse what kubectl refuses or what would hang us.

- `1e-06` is a number (kustomize and Go write small floats that way; YAML 1.1 wants a dot);
- dates stay strings (kubectl turns YAML into JSON, which has no dates);
- keys are strings (JSON object keys; `1: x` becomes `"1": x`, as sigs.k8s.io/yaml does);
- a key given twice is an error (kubectl refuses it, PyYAML would keep the last silently);
- bounded while reading, not after: at most MAX_FILE_BYTES are read (a bigger file, or /dev/zero, is
  refused after that many bytes), and composing stops at MAX_DOCUMENT_NODES values in a document or
  MAX_FILE_NODES in the file (a 3.6 MB document of 200,000 keys took 9 s and 368 MB to refuse when
  the limit applied after parsing); then nesting, and the size of the document once aliases are
  expanded (a billion-laughs document is a few lines that expand to gigabytes in anything that walks it);
- JSON's types only: the tags !!str, !!int, !!float, !!bool, !!null, !!map and !!seq; any other tag
  (!!binary, !!set, !!timestamp, !!python/...) and a value its tag cannot read (`!!bool maybe`) or
  a string holding a lone surrogate ("\ud800") is refused with the field's path and line;
- not UTF-8, or unparsable: one message with the line, never a traceback.
"""

from __future__ import annotations

import re
from typing import Any, BinaryIO, Iterator

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from . import redaction

MAX_FILE_BYTES = 4 * 1024 * 1024  # several manifests; one Kubernetes object is at most ~1.5 MiB
MAX_DEPTH = 64  # an EmpoRun nests 6 levels
MAX_DOCUMENT_NODES = 10_000  # an EmpoRun has ~150 values, a few thousand with every list at its maximum
MAX_FILE_NODES = 200_000  # a 1,000-point `empo sweep` (its limit) is ~140,000
MAX_EXPANDED_NODES = 100_000  # a document once aliases are expanded
MAX_EXPANDED_CHARS = 8 * 1024 * 1024
MAX_MESSAGE_VALUE = 120  # characters of a value quoted in an error message
_JSON_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}
_TAG_NAMES = {"int": "an integer", "float": "a number", "bool": "a boolean (true or false)", "null": "null",
              "str": "a string", "seq": "a list", "map": "a mapping"}
_SURROGATE = re.compile("[\ud800-\udfff]")


class ManifestYamlError(ValueError):
    """The file cannot be read as manifests; the message says where and why."""


class ValueYamlError(ConstructorError):
    """A value (or tag) of a well-formed document that a manifest cannot hold; names the field."""


def shorten(text: str, limit: int = MAX_MESSAGE_VALUE) -> str:
    """`text` with URL credentials masked, cut to `limit` characters, saying how much was left out
    (error messages quote values)."""
    return redaction.shorten(text, limit)


def printable(text: str) -> str:
    """`text` as any terminal can print it: lone surrogates and other unencodable characters escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _key_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class KubeYamlLoader(yaml.SafeLoader):
    """SafeLoader with kubectl's reading of numbers, dates and keys, duplicate keys refused and
    nesting bounded."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._depth = 0
        self._file_nodes = 0
        self._document_nodes = 0
        self._path: list[str | int] = []  # the field being constructed, for messages

    # ------------------------------------------------------------------------- composing (bounded)

    def compose_document(self) -> Node | None:
        self._document_nodes = 0
        return super().compose_document()

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        # Counted as each node is composed: a huge document is refused after MAX_DOCUMENT_NODES
        # values, without scanning the rest of it.
        self._file_nodes += 1
        self._document_nodes += 1
        if self._document_nodes > MAX_DOCUMENT_NODES:
            raise ComposerError(None, None, f"more than {MAX_DOCUMENT_NODES} values in one document (an EmpoRun has "
                                "a few hundred); refusing it", self.peek_event().start_mark)
        if self._file_nodes > MAX_FILE_NODES:
            raise ComposerError(None, None, f"more than {MAX_FILE_NODES} values in the file; split it",
                                self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ConstructorError(None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    # --------------------------------------------------------------------- constructing (JSON only)

    def construct_document(self, node: Node) -> Any:
        # Depth first (PyYAML defers nested mappings otherwise), so an error knows its field's path.
        # Depth is bounded by MAX_DEPTH, recursion through aliases refused by _check_expansion.
        self.deep_construct = True
        self._path = []
        return super().construct_document(node)

    def _where(self) -> str:
        from .schema_check import field_path

        return field_path([p if isinstance(p, int) else printable(shorten(p, 60)) for p in self._path]) or "<root>"

    def _refuse(self, node: Node, problem: str) -> ValueYamlError:
        return ValueYamlError(None, None, f"{self._where()}: {problem}" if self._path else problem, node.start_mark)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        if node.tag not in _JSON_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise self._refuse(node, f"the tag {printable(shorten(tag, 60))} is not allowed in a manifest (kubectl "
                               "sends JSON: strings, numbers, booleans, null, lists and mappings)")
        if not isinstance(node, ScalarNode):
            try:
                return super().construct_object(node, deep=deep)
            except ValueYamlError:
                raise
            except ConstructorError as exc:  # `!!int {a: 1}`, a key given twice: the innermost field's path
                raise ValueYamlError(exc.context, exc.context_mark, self._refuse(node, exc.problem or "").problem,
                                     exc.problem_mark) from None
        try:
            value = super().construct_object(node, deep=deep)
        except ValueYamlError:
            raise
        except (ConstructorError, ValueError, KeyError, TypeError, OverflowError, ArithmeticError) as exc:
            # `!!bool maybe` (KeyError), `!!int x` (ValueError), `!!int {}`: the value is not quoted (it
            # may be a secret's, and Python's own messages quote it), the line and column point at it
            kind = _TAG_NAMES.get(node.tag.rsplit(":", 1)[-1], "a value of its type")
            why = " (more than 4300 digits)" if "digits" in str(exc) else ""
            raise self._refuse(node, f"the value is not {kind}{why}") from None
        if isinstance(value, str) and _SURROGATE.search(value):
            raise self._refuse(node, "holds a lone surrogate (an escape like \\ud800 that is not a character); "
                               "it cannot be sent as UTF-8 JSON")
        return value

    def construct_sequence(self, node: Node, deep: bool = False) -> list[Any]:
        if not isinstance(node, SequenceNode):
            return super().construct_sequence(node, deep=deep)
        out = []
        for i, child in enumerate(node.value):
            self._path.append(i)
            try:
                out.append(self.construct_object(child, deep=deep))
            finally:
                self._path.pop()
        return out

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[str, Any]:
        if not isinstance(node, MappingNode):
            return super().construct_mapping(node, deep=deep)
        explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
        self.flatten_mapping(node)  # merge keys (<<) put the merged pairs first; explicit keys override them
        merged = len(node.value) - explicit
        mapping: dict[str, Any] = {}
        seen: dict[str, Any] = {}
        for i, (key_node, value_node) in enumerate(node.value):
            if not isinstance(key_node, ScalarNode):
                raise ConstructorError(None, None, "a key must be a plain value, not a list or mapping",
                                       key_node.start_mark)
            key = _key_text(self.construct_object(key_node, deep=True))
            if key in seen and i >= merged:  # only a key written twice, not one overriding a merged one
                raise ConstructorError(f"while reading the mapping on line {node.start_mark.line + 1}", None,
                                       f"key {shorten(key)!r} is given twice (kubectl refuses duplicate keys)",
                                       key_node.start_mark)
            if i >= merged:
                seen[key] = key_node.start_mark
            self._path.append(key)
            try:
                mapping[key] = self.construct_object(value_node, deep=deep)
            finally:
                self._path.pop()
        return mapping


KubeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _check_expansion(root: Node) -> None:
    """Refuse a document whose alias-expanded form is too big or too deep. Aliases share nodes,
    so sizes are memoised per node: linear in the document's text, whatever it expands to."""
    size: dict[int, tuple[int, int, int]] = {}  # id(node) -> (nodes, chars, depth) when expanded
    stack: list[tuple[Node, bool]] = [(root, False)]
    active: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in size:
            continue
        if isinstance(node, ScalarNode):
            size[key] = (1, len(node.value), 1)
            continue
        children = [c for pair in node.value for c in pair] if isinstance(node, MappingNode) else list(node.value)
        if not children_done:
            if key in active:
                raise ConstructorError(None, None, "an alias refers to a value that contains it (recursive alias)",
                                       node.start_mark)
            active.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in active:
                    raise ConstructorError(None, None, "an alias refers to a value that contains it (recursive alias)",
                                           child.start_mark)
                stack.append((child, False))
            continue
        active.discard(key)
        nodes = 1 + sum(size[id(c)][0] for c in children)
        chars = sum(size[id(c)][1] for c in children)
        depth = 1 + max((size[id(c)][2] for c in children), default=0)
        if nodes > MAX_EXPANDED_NODES or chars > MAX_EXPANDED_CHARS:
            raise ConstructorError(None, None, f"expands (through aliases) to more than {MAX_EXPANDED_NODES} values "
                                   f"or {MAX_EXPANDED_CHARS // (1024 * 1024)} MiB of text; refusing it", node.start_mark)
        if depth > MAX_DEPTH:
            raise ConstructorError(None, None, f"nested deeper than {MAX_DEPTH} levels once aliases are expanded",
                                   node.start_mark)
        size[key] = (nodes, chars, depth)


def _iter_documents(text: str) -> Iterator[Any]:
    loader = KubeYamlLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            _check_expansion(node)
            yield loader.construct_document(node)
    finally:
        loader.dispose()


def _message(exc: BaseException) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        text = ", ".join(shorten(str(p), 200) for p in (exc.context, exc.problem) if p)
        return text + where
    return shorten(" ".join(str(exc).split()), 300) or type(exc).__name__


def read_limited(stream: BinaryIO) -> bytes:
    """At most MAX_FILE_BYTES of `stream`, or ManifestYamlError without reading further (a 5 GB file,
    or /dev/zero, costs the same as a 4 MiB one)."""
    data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ManifestYamlError(f"file is larger than {MAX_FILE_BYTES} bytes, the limit for manifests")
    return data


def decode(data: bytes) -> str:
    """UTF-8 text of a manifest file, or ManifestYamlError saying where it is not."""
    if len(data) > MAX_FILE_BYTES:
        raise ManifestYamlError(f"file is {len(data)} bytes; manifests are limited to {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ManifestYamlError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})") from None


def load_yaml_documents(text: str | bytes) -> list[Any]:
    """Every non-empty document of a YAML stream, or ManifestYamlError with the line and the cause."""
    if isinstance(text, bytes):
        text = decode(text)
    elif len(text) > MAX_FILE_BYTES:
        raise ManifestYamlError(f"text is {len(text)} characters; manifests are limited to {MAX_FILE_BYTES}")
    try:
        return [d for d in _iter_documents(text) if d is not None]
    except ValueYamlError as exc:
        raise ManifestYamlError(f"cannot read a value: {_message(exc)}") from None
    except yaml.YAMLError as exc:
        raise ManifestYamlError(f"not valid YAML: {_message(exc)}") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits
        raise ManifestYamlError(f"cannot read a value: {_message(exc)}") from None
    except RecursionError:
        raise ManifestYamlError(f"nested too deeply (more than {MAX_DEPTH} levels)") from None
