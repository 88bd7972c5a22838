"""The CRD's CEL rules (x-kubernetes-validations, written by hand in empo_api/models.py) against the
validators they restate: for each rule, specs that break it and specs that keep it, checked by the
models (pydantic; the operator's immutable_changes for the rules on oldSelf) and by the rule itself,
evaluated by a CEL interpreter (cel-python) on the object as the API server holds it (the CRD's
defaults applied, numbers typed as the schema says). Every rule of the CRD must have a case that
breaks it and one that keeps it, so a new rule cannot go untested.

A case's `cel` says what the API server does with it: "agree" (same verdict as the models), or
"weaker" where the rule is documented as the API server's half of a stricter validator (the models
refuse, the rule lets it through; e.g. a '.' path segment, which only the models refuse)."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any

import celpy
import pytest
from celpy import celtypes
from pydantic import ValidationError

from empo_api.crd import build_crd
from empo_api.models import EmpoRun, EmpoRunSpec
from tests.unit.empo_api.test_crd_defaults import server_defaults

BASE = {"model": {"source": "Qwen/Qwen2.5-Math-1.5B"}, "dataset": {"uri": "s3://data/math.jsonl"},
        "storage": {"uri": "s3://runs/empo"}}
DELETE = object()


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The CRD's schema of spec (read only)."""
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def rules(node: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str, str]]:
    """(path from spec, rule, message) of every CEL rule; '[]' stands for every item of a list."""
    found = [(path, r["rule"], r["message"]) for r in node.get("x-kubernetes-validations") or []]
    for name, sub in (node.get("properties") or {}).items():
        found += rules(sub, (*path, name))
    if isinstance(node.get("items"), dict):
        found += rules(node["items"], (*path, "[]"))
    return found


def to_cel(node: dict[str, Any], value: Any) -> Any:
    """A JSON value as the API server hands it to CEL: its schema's type, not Python's."""
    kind = node.get("type")
    if isinstance(value, dict):
        props, extra = node.get("properties") or {}, node.get("additionalProperties")
        return celtypes.MapType({celtypes.StringType(k): to_cel(props.get(k) or (extra if isinstance(extra, dict) else {}), v)
                                 for k, v in value.items()})
    if isinstance(value, list):
        return celtypes.ListType([to_cel(node.get("items") or {}, v) for v in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if kind == "number" and isinstance(value, (int, float)):
        return celtypes.DoubleType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    return celpy.json_to_cel(value)


def at(node: dict[str, Any], obj: Any, path: tuple[str, ...]) -> list[tuple[dict[str, Any], Any]]:
    """(schema, value) of every object the rule at `path` applies to; none when a field is absent
    (the API server checks a rule only on a field that is there)."""
    if not path:
        return [(node, obj)]
    head, rest = path[0], path[1:]
    if head == "[]":
        return [pair for item in obj or [] for pair in at(node["items"], item, rest)]
    if not isinstance(obj, dict) or head not in obj:
        return []
    return at(node["properties"][head], obj[head], rest)


_ENV = celpy.Environment()


def cel_holds(rule: str, path: tuple[str, ...], new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    node = schema()
    new = server_defaults(node, copy.deepcopy(new))
    program = _ENV.program(_ENV.compile(rule))
    news = at(node, new, path)
    olds = at(node, server_defaults(node, copy.deepcopy(old)), path) if old is not None else [None] * len(news)
    if "oldSelf" in rule and (old is None or len(olds) != len(news)):
        return True  # a transition rule applies only to an update of a field that was and is there
    for (sub, value), before in zip(news, olds):
        activation = {"self": to_cel(sub, value)}
        if "oldSelf" in rule:
            activation["oldSelf"] = to_cel(before[0], before[1])
        result = program.evaluate(activation)
        if not isinstance(result, celtypes.BoolType):
            raise AssertionError(f"{rule}: evaluated to {result!r}, not a boolean")
        if not result:
            return False
    return True


def models_hold(new: dict[str, Any], old: dict[str, Any] | None) -> tuple[bool, str]:
    """The models' verdict: the spec validates; for an update, no immutable field changed."""
    try:
        spec = EmpoRun.model_validate({"apiVersion": "empo.dev/v1alpha1", "kind": "EmpoRun",
                                       "metadata": {"name": "r", "namespace": "ns"}, "spec": new}).spec
    except ValidationError as exc:
        return False, str(exc)
    if old is not None:
        from empo_operator.lifecycle import immutable_changes

        changed = immutable_changes(EmpoRunSpec.model_validate(old).to_wire(), spec.to_wire())
        return not changed, ", ".join(changed)
    return True, ""


def merged(patch: dict[str, Any], base: dict[str, Any] = BASE) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(value, out[key])
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class Case:
    rule: str  # the start of the rule's message (unique with `path`)
    path: tuple[str, ...]
    spec: dict[str, Any]  # a patch of BASE
    holds: bool  # the rule's verdict
    old: dict[str, Any] | None = None  # a patch of BASE: the spec before the update
    says: str = ""  # part of the models' refusal, when they refuse
    cel: str = "agree"  # or "weaker": the models refuse what the rule lets through

    @property
    def id(self) -> str:
        return f"{'.'.join(self.path) or 'spec'}:{self.rule[:24]}:{'keeps' if self.holds else 'breaks'}"


TWO_LEARNERS = {"learner": {"replicas": 2}}
TRAVERSAL = "must not contain a '..' path segment"
CASES = [
    # spec
    Case("algorithm.reward gold needs", (), {"algorithm": {"reward": "gold"}}, False, says="dataset.answerField"),
    Case("algorithm.reward gold needs", (), {"algorithm": {"reward": "gold"}, "dataset": {"answerField": "a"}}, True),
    Case("algorithm.reward gold needs", (), {"algorithm": {"reward": "ttrl"}}, True),
    Case("spec.task is immutable", (), {"task": "free-form"}, False, old={}, says="spec.task"),
    Case("spec.task is immutable", (), {"suspend": True}, True, old={}),
    Case("algorithm.promptsPerStep x numGenerations", (), {"algorithm": {"promptsPerStep": 3, "numGenerations": 3,
                                                                       "gradientAccumulation": 2}}, False,
         says="must be divisible"),
    Case("algorithm.promptsPerStep x numGenerations", (), {"algorithm": {"promptsPerStep": 4, "numGenerations": 3,
                                                                       "gradientAccumulation": 2}}, True),
    Case("algorithm.promptsPerStep x numGenerations", (), {"algorithm": {"promptsPerStep": 3, "numGenerations": 3},
                                                          "learner": {"perDeviceBatchSize": 4}}, True,
         says="must equal promptsPerStep x numGenerations", cel="weaker"),
    Case("sampler engines", (), {**TWO_LEARNERS, "algorithm": {"promptsPerStep": 2}}, False, says="sampler engines"),
    Case("sampler engines", (), {**TWO_LEARNERS, "algorithm": {"promptsPerStep": 2}, "sampler": {"replicas": 2}}, True),
    Case("sampler engines", (), {**TWO_LEARNERS, "algorithm": {"promptsPerStep": 2}, "sampler": {"replicas": 0}}, True),
    Case("learner.sharding needs", (), {"learner": {"replicas": 2, "sharding": "fsdp"}, "algorithm": {"promptsPerStep": 2},
                                        "sampler": {"replicas": 0}}, False, says="learner.sharding fsdp needs"),
    Case("learner.sharding needs", (), {"learner": {"replicas": 2, "sharding": "fsdp"}, "algorithm": {"promptsPerStep": 2},
                                        "sampler": {"replicas": 2}}, True),
    Case("learner.sharding needs", (), {"learner": {"replicas": 1, "sharding": "fsdp"}, "sampler": {"replicas": 0}}, True),
    Case("algorithm.topP below 1", (), {"algorithm": {"topP": 0.9}}, False, says="algorithm.topP is 0.9"),
    Case("algorithm.topP below 1", (), {"algorithm": {"topP": 0.9}, "sampler": {"replicas": 0}}, True),
    Case("algorithm.topP below 1", (), {"algorithm": {"topP": 0.9},
                                        "sampler": {"backend": "transformers", "gpusPerReplica": 0}}, True),
    Case("algorithm.topP below 1", (), {"algorithm": {"topP": 0.9},
                                        "sampler": {"backend": "vllm", "gpusPerReplica": 0}}, False,
         says="algorithm.topP is 0.9"),
    Case("algorithm.topP below 1", (), {"algorithm": {"topP": 1}}, True),
    # the no-traversal rule on every location field: (field, breaks with '..', breaks with '\\', keeps,
    # what only the models refuse)
    *[c for field, up, back, keep, stricter in (
        (("model", "source"), "s3://bkt/../x", "s3://bkt/a\\x", "s3://bkt/x..y/z", ("s3://bkt/./x", "'.'")),
        (("model", "revision"), "a/../x", "a\\x", "v1.0/rc", ("x..y", "git ref names")),
        (("dataset", "uri"), "s3://bkt/../x", "s3://bkt/a\\x", "s3://bkt/x..y/z", ("s3://bkt/./x", "'.'")),
        (("storage", "uri"), "s3://bkt/../x", "s3://bkt/a\\x", "s3://bkt/x..y/z", ("s3://bkt/./x", "'.'")))
      for c in (Case(TRAVERSAL, field, {field[0]: {field[1]: up}}, False, says="'..'"),
                Case(TRAVERSAL, field, {field[0]: {field[1]: back}}, False, says="backslash"),
                Case(TRAVERSAL, field, {field[0]: {field[1]: keep}}, True),
                Case(TRAVERSAL, field, {field[0]: {field[1]: stricter[0]}}, True, says=stricter[1], cel="weaker"))],
    # immutable sections
    Case("spec.model is immutable", ("model",), {"model": {"source": "Qwen/Qwen2.5-Math-7B"}}, False, old={},
         says="spec.model.source"),
    Case("spec.model is immutable", ("model",), {"suspend": True}, True, old={}),
    Case("spec.dataset is immutable", ("dataset",), {"dataset": {"uri": "s3://data/other.jsonl"}}, False, old={},
         says="spec.dataset.uri"),
    Case("spec.dataset is immutable", ("dataset",), {"maxRestarts": 5}, True, old={}),
    Case("spec.algorithm is immutable", ("algorithm",), {"algorithm": {"temperature": 0.7}}, False, old={},
         says="spec.algorithm.temperature"),
    Case("spec.algorithm is immutable", ("algorithm",), {"algorithm": {"temperature": 0.9}}, True, old={}),
    Case("spec.sampler is immutable", ("sampler",), {"sampler": {"gpuMemoryUtilization": 0.5}}, False, old={},
         says="spec.sampler.gpuMemoryUtilization"),
    Case("spec.sampler is immutable", ("sampler",), {"eval": {"every": 7}}, True, old={}),
    Case("spec.learner is immutable", ("learner",), {"learner": {"gradientCheckpointing": False}}, False, old={},
         says="spec.learner.gradientCheckpointing"),
    Case("spec.learner is immutable", ("learner",), {"queueName": "q"}, True, old={}),
    Case("spec.storage.uri is immutable", ("storage",), {"storage": {"uri": "s3://runs/other"}}, False, old={},
         says="spec.storage.uri"),
    Case("spec.storage.uri is immutable", ("storage",), {"storage": {"uri": "s3://runs/empo"}}, False,
         old={"storage": {"uri": DELETE}}, says="spec.storage.uri"),
    Case("spec.storage.uri is immutable", ("storage",), {"storage": {"checkpointEvery": 10}}, True, old={}),
    # algorithm
    Case("set algorithm.steps or algorithm.epochs", ("algorithm",), {"algorithm": {"steps": 5, "epochs": 1}}, False,
         says="set steps or epochs, not both"),
    Case("set algorithm.steps or algorithm.epochs", ("algorithm",), {"algorithm": {"steps": 5}}, True),
    Case("entropyBand.low must be below", ("algorithm", "entropyBand"), {"algorithm": {"entropyBand": {"low": 0.5, "high": 0.5}}},
         False, says="must be below high"),
    Case("entropyBand.low must be below", ("algorithm", "entropyBand"), {"algorithm": {"entropyBand": {"low": 0.5}}}, True),
    Case("entropyBand.low must be below", ("algorithm", "entropyBand"), {"algorithm": {"entropyBand": {"low": 1, "high": 0.9}}},
         False, says="must be below high"),
    Case("clustering.judgeModel is required", ("algorithm", "clustering"), {"algorithm": {"clustering": {"method": "judge"}}},
         False, says="judgeModel is required"),
    Case("clustering.judgeModel is required", ("algorithm", "clustering"),
         {"algorithm": {"clustering": {"method": "judge", "judgeModel": "Qwen/Qwen2.5-7B-Instruct"}}}, True),
    Case("clustering.judgeModel is required", ("algorithm", "clustering"), {"algorithm": {"clustering": {"method": "math"}}}, True),
    # sampler
    Case("sampler.gpusPerReplica must be a multiple", ("sampler",), {"sampler": {"gpusPerReplica": 3, "tensorParallelSize": 2}},
         False, says="must be a multiple of tensorParallelSize"),
    Case("sampler.gpusPerReplica must be a multiple", ("sampler",), {"sampler": {"gpusPerReplica": 4, "tensorParallelSize": 2}},
         True),
    Case("sampler.gpusPerReplica must be a multiple", ("sampler",),
         {"sampler": {"gpusPerReplica": 0, "tensorParallelSize": 2, "backend": "transformers"}}, True),
    # ray.env and ray.envFrom
    Case("ray.env: set value or secretKeyRef", ("ray", "env", "[]"), {"ray": {"env": [{"name": "HTTP_PROXY"}]}}, False,
         says="set value or secretKeyRef, exactly one"),
    Case("ray.env: set value or secretKeyRef", ("ray", "env", "[]"),
         {"ray": {"env": [{"name": "X", "value": "1", "secretKeyRef": {"name": "s", "key": "k"}}]}}, False,
         says="set value or secretKeyRef, exactly one"),
    Case("ray.env: set value or secretKeyRef", ("ray", "env", "[]"), {"ray": {"env": [{"name": "X", "value": "1"}]}}, True),
    Case("ray.env: a variable named like a secret", ("ray", "env", "[]"),
         {"ray": {"env": [{"name": "HF_TOKEN", "value": "hf_abc"}]}}, False, says="looks like a secret"),
    Case("ray.env: a variable named like a secret", ("ray", "env", "[]"),
         {"ray": {"env": [{"name": "my_secret_thing", "value": "x"}]}}, False, says="looks like a secret"),
    Case("ray.env: a variable named like a secret", ("ray", "env", "[]"),
         {"ray": {"env": [{"name": "HF_TOKEN", "secretKeyRef": {"name": "hf", "key": "token"}}]}}, True),
    Case("ray.env: a variable named like a secret", ("ray", "env", "[]"),
         {"ray": {"env": [{"name": "TOKENIZERS_PARALLELISM", "value": "false"}]}}, True),
    Case("ray.envFrom: set secretRef or configMapRef", ("ray", "envFrom", "[]"), {"ray": {"envFrom": [{"prefix": "A_"}]}},
         False, says="set secretRef or configMapRef, exactly one"),
    Case("ray.envFrom: set secretRef or configMapRef", ("ray", "envFrom", "[]"),
         {"ray": {"envFrom": [{"secretRef": {"name": "a"}, "configMapRef": {"name": "b"}}]}}, False,
         says="set secretRef or configMapRef, exactly one"),
    Case("ray.envFrom: set secretRef or configMapRef", ("ray", "envFrom", "[]"),
         {"ray": {"envFrom": [{"configMapRef": {"name": "b"}}]}}, True),
]


def _rule(case: Case) -> str:
    matches = [rule for path, rule, message in rules(schema()) if path == case.path and message.startswith(case.rule)]
    assert len(matches) == 1, f"{case.id}: {len(matches)} rules at {case.path} whose message starts {case.rule!r}"
    return matches[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_rule_and_the_models_agree(case: Case):
    new = merged(case.spec)
    old = merged(case.old) if case.old is not None else None
    assert cel_holds(_rule(case), case.path, new, old) is case.holds
    models_ok, why = models_hold(new, old)
    if case.cel == "weaker":
        assert case.holds and not models_ok, "the rule is the weaker half: the models refuse what it lets through"
    else:
        assert models_ok is case.holds, why
    if not models_ok:
        assert case.says in why, why


def test_every_rule_has_a_case_that_breaks_it_and_one_that_keeps_it():
    covered: dict[tuple[tuple[str, ...], str], set[bool]] = {}
    for case in CASES:
        if case.cel == "agree":
            covered.setdefault((case.path, _rule(case)), set()).add(case.holds)
    missing = [f"{'.'.join(path) or 'spec'}: {rule}" for path, rule, _ in rules(schema())
               if covered.get((path, rule)) != {True, False}]
    assert not missing, "CEL rules without a breaking and a keeping case:\n" + "\n".join(missing)


def test_the_base_spec_is_valid_and_keeps_every_rule():
    assert models_hold(merged({}), None) == (True, "")
    for path, rule, _ in rules(schema()):
        assert cel_holds(rule, path, merged({}), merged({}))
