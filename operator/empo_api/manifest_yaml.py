"""Read manifests as kubectl does, and refuse what kubectl refuses or what would hang us.

- `1e-06` is a number (kustomize and Go write small floats that way; YAML 1.1 wants a dot);
- dates stay strings (kubectl turns YAML into JSON, which has no dates);
- keys are strings (JSON object keys; `1: x` becomes `"1": x`, as sigs.k8s.io/yaml does);
- a key given twice is an error (kubectl refuses it, PyYAML would keep the last silently);
- bounded: the file's size, its nesting, and the size of the document once aliases are expanded
  (a billion-laughs document is a few lines that expand to gigabytes in anything that walks it);
- not UTF-8, or unparsable: one message with the line, never a traceback.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

MAX_FILE_BYTES = 4 * 1024 * 1024  # several manifests; one Kubernetes object is at most ~1.5 MiB
MAX_DEPTH = 64  # an EmpoRun nests 6 levels
MAX_EXPANDED_NODES = 100_000  # an EmpoRun has ~150 nodes
MAX_EXPANDED_CHARS = 8 * 1024 * 1024
MAX_MESSAGE_VALUE = 120  # characters of a value quoted in an error message


class ManifestYamlError(ValueError):
    """The file cannot be read as manifests; the message says where and why."""


def shorten(text: str, limit: int = MAX_MESSAGE_VALUE) -> str:
    """`text` cut to `limit` characters, saying how much was left out (error messages quote values)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


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

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ConstructorError(None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

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
            mapping[key] = self.construct_object(value_node, deep=deep)
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
    except yaml.YAMLError as exc:
        raise ManifestYamlError(f"not valid YAML: {_message(exc)}") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits
        raise ManifestYamlError(f"cannot read a value: {_message(exc)}") from None
    except RecursionError:
        raise ManifestYamlError(f"nested too deeply (more than {MAX_DEPTH} levels)") from None
