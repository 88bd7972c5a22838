"""A seeded fuzzer over the examples: `empo validate` never crashes, never hangs, and every refusal
names its field (or, for a file it cannot read, says why and where)."""

import copy
import io
import random
import re
import time
from pathlib import Path

import yaml

from empo_api.validate import validate_files

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = [d for p in sorted((REPO / "examples").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())
            if isinstance(d, dict) and d.get("kind") == "EmpoRun"]

MUTATIONS = 300
SEED = 18

JUNK = [None, "", 0, -1, 2**64, -(2**63) - 1, 1e308, float("inf"), float("nan"), True, "1.2.3", "16GiGi",
        "x" * 70_000, [], {}, {"a": 1}, [1, "a", None], {1: "x", "1": "y"}, "2024-01-01", "s3://b..b/x",
        "http://user:pass@host/x", "bundled:nope", "{question}", "math5000", [[[[[[[[]]]]]]]], "é\u202e",
        {"key": "", "operator": "Equal"}, ["gpqa"], "<<", "*alias", "&anchor", "- item", "null"]
TEXT_NOISE = list(":-[]{}&*!|>'\"#%@`,?\t\n ") + ["\x00", "\ufeff", "<<: *a", "&a", "*a", "!!python/object:os.system"]


def _nodes(node, path=()):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _nodes(v, path + (i,))


def _mutate_doc(doc, rnd):
    doc = copy.deepcopy(doc)
    for _ in range(rnd.randint(1, 3)):
        path, _ = rnd.choice(list(_nodes(doc)))
        if not path:
            continue
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        key = path[-1]
        op = rnd.random()
        if op < 0.6:
            parent[key] = copy.deepcopy(rnd.choice(JUNK))
        elif op < 0.75 and isinstance(parent, dict):
            del parent[key]
        elif op < 0.9 and isinstance(parent, dict):
            parent[rnd.choice(["unknownField", 7, "spec", "metadata", "token"])] = rnd.choice(JUNK[:12])
        else:
            parent[key] = {"nested": [parent[key]] * 3}
    return doc


def _mutate_text(text, rnd):
    op = rnd.random()
    if op < 0.3:
        i = rnd.randrange(len(text))
        return text[:i] + rnd.choice(TEXT_NOISE) + text[i:]
    if op < 0.45:
        i = rnd.randrange(len(text))
        return text[:i] + text[i + rnd.randint(1, 20):]
    if op < 0.6:
        lines = text.splitlines(keepends=True)
        i = rnd.randrange(len(lines))
        return "".join(lines[:i + 1] + [lines[i]] + lines[i + 1:])  # a duplicate key, or a repeated item
    if op < 0.7:
        bomb = "bomb: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 8))
        return bomb + text.replace("spec:", "spec:\n  extra: *l7\n", 1) if rnd.random() < 0.5 else bomb + text
    if op < 0.8:
        return text[: rnd.randrange(len(text))]
    if op < 0.9:
        return text.replace("\n", "\n" + "  " * rnd.randint(1, 3), 1)
    return text + "---\n" + text


def _case(rnd):
    doc = _mutate_doc(rnd.choice(EXAMPLES), rnd) if rnd.random() < 0.8 else copy.deepcopy(rnd.choice(EXAMPLES))
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    if rnd.random() < 0.5:
        text = _mutate_text(text, rnd)
    data = text.encode("utf-8", "surrogatepass")
    if rnd.random() < 0.05:
        i = rnd.randrange(len(data))
        data = data[:i] + b"\xff\xfe" + data[i:]
    return data


LINE = re.compile(r"^(?P<file>\S+?)(#\d+)?( \((?P<name>[^)]*)\))?: (?P<rest>.*)$")


def test_fuzzed_manifests_get_messages_not_crashes(tmp_path):
    rnd = random.Random(SEED)
    stats = {"ok": 0, "refused": 0, "unreadable": 0}
    slowest = 0.0
    started = time.perf_counter()
    for n in range(MUTATIONS):
        path = tmp_path / f"m{n}.yaml"
        path.write_bytes(_case(rnd))
        out = io.StringIO()
        t0 = time.perf_counter()
        errors = validate_files([path], out=out)  # any exception fails the test: that is a crash
        slowest = max(slowest, time.perf_counter() - t0)
        lines = out.getvalue().splitlines()
        assert lines, path.read_bytes()[:200]
        for line in lines:
            m = LINE.match(line)
            assert m and m["file"] == str(path), line
            rest = m["rest"]
            assert len(line) < 1200, f"message too long ({len(line)} characters): {line[:200]}"
            if rest.startswith(("ok (", "cannot read:", "no manifest")):
                continue
            # `field.path: message`; only a document that is not a mapping is refused as a whole
            assert not rest.startswith("<root>") or "expected a mapping" in rest, line
            field, sep, message = rest.partition(": ")
            assert sep and field.strip() and message.strip(), line
        kind = "ok" if not errors else ("unreadable" if "cannot read" in out.getvalue() else "refused")
        stats[kind] += 1
    elapsed = time.perf_counter() - started
    print(f"\nfuzz: {MUTATIONS} manifests (seed {SEED}), 0 crashes, {stats}, slowest {slowest:.2f}s, "
          f"total {elapsed:.1f}s")
    assert slowest < 5.0
    assert stats["refused"] > MUTATIONS // 3 and stats["unreadable"] > 10  # the fuzzer reaches both paths
