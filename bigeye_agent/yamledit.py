"""Non-destructive edits of `bigeye_agent.yml`: a text splice at the changed keys only.

A YAML round-trip would re-indent, re-quote and drop comments of a file that other agents own,
so instead the file is composed with PyYAML to find where each key's value starts and ends, and
only those characters change. A missing key becomes a new line among its siblings (with their
indentation); a missing top-level key is appended at the end. `verify` re-parses the result and
checks that the data equals the old data with exactly the intended values changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

NULL_TAG = "tag:yaml.org,2002:null"
DEFAULT_INDENT = 2
Path = tuple[str, ...]


class YamlEditError(ValueError):
    """The file cannot be edited safely; `str()` says which key and why."""


def flow(value: Any) -> str:
    """`value` as a one-line YAML flow node, valid in both block and flow context."""
    if isinstance(value, str) and any(ord(ch) < 0x20 or ch == "\x7f" for ch in value):
        return json.dumps(value)  # a JSON string is a YAML double-quoted scalar
    dumped = yaml.safe_dump(
        [value], default_flow_style=True, sort_keys=False, width=2**31 - 1, allow_unicode=True
    )
    return dumped.strip()[1:-1]


def newline_of(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _load(text: str) -> Any:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise YamlEditError(f"not valid YAML: {str(exc).splitlines()[0]}") from None
    return {} if data is None else data


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not True here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _leaves(tree: Mapping[str, Any], prefix: Path = ()) -> Iterator[Path]:
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key)


def _subtree(tree: Mapping[str, Any], path: Path) -> Any:
    node: Any = tree
    for key in path:
        node = node[key]
    return node


def _lookup(data: Any, path: Path) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False, None
        data = data[key]
    return True, data


def _copy(value: Any) -> Any:
    """A deep copy that does not keep shared nodes shared (an alias is a separate value here)."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def merged(data: Mapping[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with every leaf of `updates` set (what the edited file must parse to)."""
    result: dict[str, Any] = _copy(dict(data))
    for path in _leaves(updates):
        node = result
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = _copy(_subtree(updates, path))
    return result


def _compose(text: str) -> Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise YamlEditError(f"not valid YAML: {str(exc).splitlines()[0]}") from None


def _find(mapping: MappingNode, key: str) -> tuple[Node, Node] | None:
    """The last entry named `key` (the loader keeps the last of duplicate keys, too)."""
    found = None
    for key_node, value_node in mapping.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            found = (key_node, value_node)
    return found


def _is_alias(key_node: Node, value_node: Node) -> bool:
    # An alias composes to the anchored node, which sits earlier in the file than its key.
    return bool(value_node.start_mark.index < key_node.end_mark.index)


def _indent_step(root: MappingNode) -> int:
    """How far the file indents a nested block mapping (2 unless it shows otherwise)."""
    for _, value in root.value:
        if isinstance(value, MappingNode) and not value.flow_style and value.value:
            step = value.value[0][0].start_mark.column
            if step > 0:
                return int(step)
    return DEFAULT_INDENT


def _line_end(text: str, index: int) -> int:
    """The index just after the line break that ends the line holding `index`."""
    if index > 0 and text[index - 1] == "\n":
        return index  # a block scalar ends with its own line break
    found = text.find("\n", index)
    return len(text) if found < 0 else found + 1


def _entry_end(text: str, mapping: MappingNode) -> int:
    """Where a new line goes after the last entry of a block mapping."""
    key_node, last = mapping.value[-1]
    while True:
        if _is_alias(key_node, last):
            return _line_end(text, key_node.end_mark.index)
        if isinstance(last, MappingNode) and not last.flow_style and last.value:
            key_node, last = last.value[-1]
        elif isinstance(last, SequenceNode) and not last.flow_style and last.value:
            last = last.value[-1]
        else:
            break
    return _line_end(text, last.end_mark.index)


def _splice_lines(text: str, at: int, lines: list[str], newline: str) -> str:
    block = newline.join(lines)
    if at == len(text) and text and not text.endswith("\n"):
        return text + newline + block  # keep the file's missing final line break
    return text[:at] + block + newline + text[at:]


def _entry_lines(key: str, want: Any, column: int, step: int, block: bool) -> list[str]:
    pad = " " * column
    if block and isinstance(want, Mapping) and want:
        inner = " " * (column + step)
        return [f"{pad}{flow(key)}:"] + [f"{inner}{flow(k)}: {flow(v)}" for k, v in want.items()]
    return [f"{pad}{flow(key)}: {flow(want)}"]


def _insert(text: str, mapping: MappingNode, key: str, want: Any, *, root: bool, step: int) -> str:
    """Add `key: want` to an existing mapping (block: a new line; flow: a new entry)."""
    entry = f"{flow(key)}: {flow(want)}"
    if mapping.flow_style:
        if not mapping.value:
            start, end = mapping.start_mark.index, mapping.end_mark.index
            return text[:start] + "{" + entry + "}" + text[end:]
        key_node, last = mapping.value[-1]
        end = key_node.end_mark.index if _is_alias(key_node, last) else last.end_mark.index
        return text[:end] + ", " + entry + text[end:]
    column = 0 if root else int(mapping.value[0][0].start_mark.column)
    lines = _entry_lines(key, want, column, step, block=root)
    return _splice_lines(text, _entry_end(text, mapping), lines, newline_of(text))


def _replace(text: str, node: Node, rendered: str) -> str:
    start, end = node.start_mark.index, node.end_mark.index
    if start == end:  # `key:` with nothing after it
        return text[:start] + " " + rendered + text[end:]
    span = text[start:end]
    tail = span[len(span.rstrip("\r\n")) :]
    return text[:start] + rendered + tail + text[end:]


def _set(text: str, path: Path, updates: Mapping[str, Any]) -> str:
    """One leaf of `updates` into `text`; a missing parent is added with its whole subtree."""
    found, current = _lookup(_load(text), path)
    if found and _same(current, _subtree(updates, path)):
        return text
    root = _compose(text)
    if root is None:  # empty, or comments only
        lines = _entry_lines(path[0], updates[path[0]], 0, DEFAULT_INDENT, block=True)
        return _splice_lines(text, len(text), lines, newline_of(text))
    if not isinstance(root, MappingNode) or root.flow_style:
        raise YamlEditError("the file is not a block mapping of keys")
    step = _indent_step(root)
    mapping = root
    for depth, key in enumerate(path):
        want = _subtree(updates, path[: depth + 1])
        dotted = ".".join(path[: depth + 1])
        pair = _find(mapping, key)
        if pair is None:
            return _insert(text, mapping, key, want, root=mapping is root, step=step)
        key_node, value = pair
        if _is_alias(key_node, value):
            raise YamlEditError(f"{dotted} is an alias (*name) of another key")
        if depth == len(path) - 1:
            return _replace(text, value, flow(want))
        if isinstance(value, MappingNode):
            mapping = value
            continue
        if isinstance(value, ScalarNode):
            if value.tag == NULL_TAG and value.start_mark.index == value.end_mark.index:
                column = 0 if mapping is root else int(key_node.start_mark.column)
                lines = [f"{' ' * (column + step)}{flow(k)}: {flow(v)}" for k, v in want.items()]
                at = _line_end(text, value.end_mark.index)
                return _splice_lines(text, at, lines, newline_of(text))
            return _replace(text, value, flow(want))
        raise YamlEditError(f"{dotted} is a list, not a mapping")
    raise AssertionError("unreachable: the loop returns")


def apply(text: str, updates: Mapping[str, Any]) -> str:
    """`text` with every leaf of the nested mapping `updates` set, all else left as it was."""
    for path in _leaves(updates):
        text = _set(text, path, updates)
    return text


def verify(old_text: str, new_text: str, updates: Mapping[str, Any]) -> None:
    """The edited file parses to the old data with exactly `updates` applied."""
    old, new = _load(old_text), _load(new_text)
    if not isinstance(old, dict) or not isinstance(new, dict):
        raise YamlEditError("the file is not a mapping of keys")
    expected = merged(old, updates)
    for key in sorted(set(expected) | set(new), key=str):
        if key not in new or key not in expected or not _same(new[key], expected[key]):
            raise YamlEditError(f"the value of {key} would not be as intended")
