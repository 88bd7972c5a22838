"""A second generator of hostile EmpoRun manifests, written from scratch rather than by mutating the
examples (test_validate_fuzz does that): YAML text with every tag and odd scalar in any field (lone
surrogates, control characters, `!!bool maybe`, `!!binary`, huge numbers, anchors and dangling
aliases), odd keys, and credentials where they would leak: URIs with userinfo in every field that
takes a URI, literal values of secret-named env entries, inline storage keys. Each case lists the
secrets it holds; no output may repeat any SECRET_WINDOW characters of one.

Driven by a random.Random: by hypothesis in tests/unit/empo_api/test_validate_secrets_fuzz.py (st.randoms, so
failures shrink and replay), and for longer runs by benchmarks/fuzz_validate.py.
"""

from __future__ import annotations

import copy
import json
import random
import re
import string
from dataclasses import dataclass, field
from typing import Any

SECRET_WINDOW = 8  # characters of a secret that must never appear in an output
SECRET_ENV_NAMES = ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN", "WANDB_API_KEY", "DB_PASSWORD",
                    "GITHUB_TOKEN", "CLIENT_SECRET_VALUE", "OPENAI_API_KEY", "hf_token", "MLFLOW_TRACKING_PASSWORD",
                    "SECRET", "MY_APIKEY"]
PLAIN_ENV_NAMES = ["HTTP_PROXY", "NCCL_DEBUG", "TOKENIZERS_PARALLELISM", "PYTHONUNBUFFERED"]
# (path, schemes): every field that takes a URI, and the schemes it is written with
URI_FIELDS = [
    (("spec", "storage", "endpoint"), ["http", "https"]),
    (("spec", "storage", "uri"), ["s3"]),
    (("spec", "model", "source"), ["s3", "hf", "https"]),
    (("spec", "dataset", "uri"), ["s3", "hf", "http"]),
    (("spec", "tracking", "mlflow", "trackingUri"), ["http", "https", "file"]),
    (("spec", "eval", "benchmarks"), ["s3", "hf"]),
    (("metadata", "annotations", "source"), ["https"]),
    (("metadata", "name"), ["http"]),
]


@dataclass(frozen=True)
class Raw:
    """YAML text written as is in a value's place (a tag, an anchor, an alias, an escape)."""

    text: str


@dataclass
class Case:
    text: bytes
    secrets: list[str] = field(default_factory=list)


ODD_RAW = [
    Raw("!!bool maybe"), Raw("!!bool yes"), Raw("!!bool 2"), Raw("!!int abc"), Raw("!!int 0x1F"), Raw("!!int 1.5"),
    Raw("!!int " + "9" * 5000), Raw("!!float x"), Raw("!!float .inf"), Raw("!!null x"), Raw("!!str 5"),
    Raw("!!binary aGVsbG8="), Raw("!!binary '%%%'"), Raw("!!timestamp 2001-12-14"), Raw("!!timestamp nope"),
    Raw("!!set {a, b}"), Raw("!!omap [a: 1, b: 2]"), Raw("!!pairs [a: 1]"), Raw("!!seq x"), Raw("!!map x"),
    Raw("!!int {a: 1}"), Raw("!!str [1]"), Raw("!!merge x"), Raw("!!python/object:os.system x"),
    Raw("!!python/name:os.system ''"), Raw("!!python/object/apply:os.system [id]"), Raw("!custom x"),
    Raw("!<tag:example.com,2000:x> y"), Raw("&anchor x"), Raw("*nowhere"), Raw('"\\ud800"'), Raw('"a\\udfff\\ud800b"'),
    Raw('"\\x00"'), Raw('"\\u202eevil"'), Raw('"\\U0001F600"'), Raw("'it''s'"), Raw("._"), Raw("0o17"), Raw("0b101"),
    Raw("1_000"), Raw("190:20:30"), Raw("2024-01-01"), Raw("1e-06"), Raw("1e400"), Raw(".nan"), Raw("-.inf"), Raw("~"),
    Raw("null"), Raw("yes"), Raw("off"), Raw("<<"), Raw("? [a]\n"), Raw("|\n  multi\n  line"), Raw("- item"),
]
ODD_VALUES = [
    True, False, None, 0, -1, 2**64, -(2**63) - 1, 1.5, 1e308, "", " ", "x" * 3_000, [], {}, [1, "a", None],
    {"a": {"b": []}}, [[[[[[[[[[]]]]]]]]]], {"1": "x", "true": "y", "null": "z"},
]


def secret(rnd: random.Random, extra: str = "") -> str:
    """A token no message would produce by chance: letters and digits, and some of `extra`."""
    alphabet = string.ascii_letters + string.digits
    body = [rnd.choice(alphabet) for _ in range(rnd.randint(16, 28))]
    for ch in extra:
        body.insert(rnd.randrange(1, len(body) - 1), ch)
    return "".join(body)


def credential_uri(rnd: random.Random, scheme: str) -> tuple[str, list[str]]:
    """A URI with credentials in one of the ways people write them; the secrets it holds."""
    user = rnd.choice(["AKIA" + "".join(rnd.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
                       secret(rnd)])
    password = secret(rnd, rnd.choice(["", "+", "/", "%2F", "%40", "~", "/+/"]))
    host = rnd.choice(["127.0.0.1:8333", "seaweed:8333", "s3.example.com", "models-x", "org", "[::1]:9000"])
    path = rnd.choice(["", "/", "/runs", "/org/model", "/data/train.jsonl"])
    form = rnd.randrange(6)
    if form == 0:
        uri, secrets = f"{scheme}://{user}:{password}@{host}{path}", [user, password]
    elif form == 1:
        uri, secrets = f"{scheme}://{user}@{host}{path}", [user]
    elif form == 2:
        uri, secrets = f"{scheme}://:{password}@{host}{path}", [password]
    elif form == 3:
        uri, secrets = f"{scheme}://{user}:{password}@@{host}{path}", [user, password]
    elif form == 4:  # percent-encoded userinfo, as a careful user writes it
        uri, secrets = f"{scheme}://{user}:{password.replace('/', '%2F')}@{host}{path}", [user, password.replace("/", "%2F")]
    else:  # a second URL later in the same value
        uri, secrets = f"{scheme}://{host}{path}?next={scheme}://{user}:{password}@{host}", [user, password]
    return uri, secrets


def skeleton(rnd: random.Random) -> dict[str, Any]:
    """A plausible EmpoRun; roughly half of them valid before anything odd is put in."""
    spec: dict[str, Any] = {
        "model": {"source": rnd.choice(["bundled:tiny-random", "s3://models-x/qwen", "Qwen/Qwen2.5-0.5B"])},
        "dataset": {"uri": rnd.choice(["data/local/arith-train.jsonl", "s3://data-x/train.jsonl", "hf://openai/gsm8k"]),
                    "questionField": "question"},
        "algorithm": {"numGenerations": 4, "promptsPerStep": 2, "steps": rnd.choice([1, 3, 50])},
        "sampler": {"backend": "transformers", "gpusPerReplica": 0},
        "learner": {"gpusPerReplica": 0, "precision": "fp32"},
        "storage": {"uri": rnd.choice(["runs", "s3://runs-x/team"])},
        "eval": {"benchmarks": [rnd.choice(["arith-heldout", "gsm8k", "math500"])]},
    }
    if rnd.random() < 0.4:
        spec["storage"]["endpoint"] = "http://seaweed:8333"
    if rnd.random() < 0.3:
        spec["tracking"] = {"mlflow": {"trackingUri": "http://mlflow:5000"}}
    if rnd.random() < 0.4:
        spec["ray"] = {"env": [{"name": rnd.choice(PLAIN_ENV_NAMES), "value": "1"}]}
    return {"apiVersion": "empo.dev/v1alpha1", "kind": "EmpoRun",
            "metadata": {"name": rnd.choice(["run-a", "x1", "tiny-smoke"]), "namespace": "team"}, "spec": spec}


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = doc
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, path + (i,))
    return out


def _replace(doc: Any, path: tuple, value: Any) -> None:
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def add_secrets(doc: dict[str, Any], rnd: random.Random) -> list[str]:
    """Put 1-3 credentials where they would leak; the secrets put in."""
    secrets: list[str] = []
    for _ in range(rnd.randint(1, 3)):
        kind = rnd.random()
        if kind < 0.55:
            path, schemes = rnd.choice(URI_FIELDS)
            uri, found = credential_uri(rnd, rnd.choice(schemes))
            _set(doc, path, [f"gpqa={uri}"] if path[-1] == "benchmarks" else uri)
        elif kind < 0.85:
            value: Any = secret(rnd)
            found = [value]
            if rnd.random() < 0.2:  # a number-looking secret: YAML reads it as an int
                value = rnd.randint(10**13, 10**15)
                found = [str(value)]
            env = doc["spec"].setdefault("ray", {}) if isinstance(doc.get("spec"), dict) else {}
            if isinstance(env, dict):
                entries = env.setdefault("env", [])
                if isinstance(entries, list):
                    entries.insert(rnd.randint(0, len(entries)), {"name": rnd.choice(SECRET_ENV_NAMES), "value": value})
        else:  # credentials written straight into spec.storage
            found = [secret(rnd)]
            _set(doc, ("spec", "storage", rnd.choice(["secretAccessKey", "accessKey", "sessionToken", "password"])),
                 found[0])
        secrets += found
    return secrets


def add_oddities(doc: dict[str, Any], rnd: random.Random) -> None:
    """Replace 0-3 values anywhere (the secrets' included) by odd scalars, tags or structures."""
    for _ in range(rnd.choice([0, 0, 1, 1, 2, 3])):
        paths = _paths(doc)
        if paths:  # tags and escapes (most make the file unreadable) less often than odd values
            _replace(doc, rnd.choice(paths), copy.deepcopy(rnd.choice(ODD_RAW if rnd.random() < 0.35 else ODD_VALUES)))
    if rnd.random() < 0.1 and isinstance(doc.get("metadata"), dict):
        doc["metadata"][Raw(rnd.choice(["? [a, b]", "!!binary a2V5", '"\\ud800"', "1", "true", "null", "[a]"]))] = "v"


_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")


def render(value: Any, rnd: random.Random, indent: int = 0, in_flow: bool = False) -> str:
    """YAML for `value`: block or flow style at random (flow inside flow), strings plain or
    JSON-quoted (JSON escapes are YAML escapes, lone surrogates included)."""
    pad = "  " * indent
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return json.dumps(value) if not (isinstance(value, float) and value != value) else ".nan"
    if isinstance(value, str):
        if _PLAIN.match(value) and rnd.random() < 0.6:
            return value
        return json.dumps(value)
    flow = in_flow or (indent > 0 and rnd.random() < 0.3)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [(_key(k, rnd), v) for k, v in value.items()]
        if flow:
            return "{" + ", ".join(f"{k}: {render(v, rnd, indent + 1, True)}" for k, v in items) + "}"
        lines = []
        for k, v in items:
            child = render(v, rnd, indent + 1)
            if isinstance(v, (dict, list)) and v and not child.startswith(("{", "[")):
                lines.append(f"{pad}{k}:\n{child}")
            else:
                lines.append(f"{pad}{k}: {child}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]"
        if flow:
            return "[" + ", ".join(render(v, rnd, indent + 1, True) for v in value) + "]"
        lines = []
        for v in value:
            child = render(v, rnd, indent + 1)
            if isinstance(v, dict) and v and not child.startswith("{"):
                lines.append(f"{pad}- " + child.lstrip())
            else:
                lines.append(f"{pad}- {child}")
        return "\n".join(lines)
    return json.dumps(str(value))


def _key(key: Any, rnd: random.Random) -> str:
    if isinstance(key, Raw):
        return key.text
    return render(str(key), rnd)


def manifest_case(rnd: random.Random) -> Case:
    """One manifest file's bytes, and the secrets it holds."""
    doc = skeleton(rnd)
    secrets = add_secrets(doc, rnd) if rnd.random() < 0.8 else []
    add_oddities(doc, rnd)
    text = render(doc, rnd) + "\n"
    roll = rnd.random()
    if roll < 0.1:
        text = text + "---\n" + render(skeleton(rnd), rnd) + "\n"
    elif roll < 0.15:
        text = "\ufeff" + text
    elif roll < 0.2:
        text = text.replace("\n", "\r\n")
    return Case(text.encode("utf-8", "surrogatepass"), secrets)


def leaked(output: str, secrets: list[str]) -> list[str]:
    """The secrets of which `output` repeats SECRET_WINDOW characters or more."""
    out = []
    for s in secrets:
        windows = {s[i:i + SECRET_WINDOW] for i in range(max(1, len(s) - SECRET_WINDOW + 1))}
        if any(w in output for w in windows):
            out.append(s)
    return out
