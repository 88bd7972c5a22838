"""The measurement of benchmarks/fault_trials.py: pure functions of what a trial observed.

The fault names and how each is judged, a poll of the run's folder (`Snapshot`), metrics.jsonl,
attempts/ and checkpoints/LATEST read into figures, what a fault cost (`measure`), the final
metrics.jsonl and model against the reference, a trial's verdict, the per-fault summary and its
tables, and the seeded moments the faults come at. Needs no cluster, store or node: tested in
tests/unit/benchmarks/test_fault_measure.py.
"""

from __future__ import annotations

import json
import random
import re
import statistics
from dataclasses import dataclass
from typing import Any

# The faults benchmarks/fault_actions.py does, and the control (no fault) that is not run by default.
FAULTS = ("drain", "evict-head", "kill-head", "delete-learner", "kubelet-restart", "operator-delete", "s3-outage")
EXTRA_FAULTS = ("none",)
# The pods are told to stop (SIGTERM after the preStop hook): the step in progress is finished and
# committed, so nothing is trained twice.
SIGTERM_FAULTS = {"drain", "evict-head", "delete-learner"}
# The run's pods are not touched: no new attempt is expected at all.
UNTOUCHED_FAULTS = {"kubelet-restart", "operator-delete", "s3-outage", "none"}
_ATTEMPT = re.compile(r"(?:^|/)attempts/attempt-(\d{6,})\.json$")


@dataclass
class Snapshot:
    """One poll of the run's folder: when, the newest attempt claimed (read before the metrics),
    metrics.jsonl's records and the step LATEST names (None: no checkpoint yet)."""

    t: float
    attempt: int
    records: list[dict]
    latest: int | None = None


def parse_metrics(body: str) -> tuple[list[dict], int]:
    """(records, torn lines) of a metrics.jsonl body, read as the trainer reads it on resume."""
    from empo_trainer.storage.layout import parse_metrics as trainer_parse

    records, torn = trainer_parse(body)
    return records, len(torn)


def newest_attempt(keys: list[str]) -> int:
    """The highest N of the attempts/attempt-N.json keys (0: none)."""
    return max((int(m.group(1)) for k in keys if (m := _ATTEMPT.search(k))), default=0)


def parse_latest_step(body: bytes | str | None) -> int | None:
    if not body:
        return None
    try:
        return int(json.loads(body)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _key(record: dict) -> str:
    return json.dumps(record, sort_keys=True)


def _max_step(records: list[dict]) -> int:
    return max((r["step"] for r in records), default=0)


def measure(snapshots: list[Snapshot], fault_at: float) -> dict[str, Any]:
    """What a fault at `fault_at` cost, from the polls before and after it.

    A metrics line is "fresh" in the first poll that shows it (its text: a step trained again logs
    other timings). Fresh lines in polls whose newest attempt is still the one at the fault are
    that attempt's (a SIGTERM's last step); fresh lines once a newer attempt was claimed are the
    next attempt's (the attempt number is read before metrics.jsonl, and an attempt logs its first
    step many seconds after its claim, so a poll every second cannot mistake one for the other).
    The next attempt's first fresh line is the step after the one it resumed from."""
    snapshots = sorted(snapshots, key=lambda s: s.t)
    before = [s for s in snapshots if s.t <= fault_at]
    after = [s for s in snapshots if s.t > fault_at]
    at_fault = before[-1] if before else Snapshot(fault_at, 0, [], None)
    old = at_fault.attempt
    seen = {_key(r) for s in before for r in s.records}
    hit = _max_step(at_fault.records)
    first_fresh_t = new_attempt_t = resumed_t = None
    resumed_from = None
    newest = old
    for s in after:
        fresh = [r for r in s.records if _key(r) not in seen]
        seen.update(_key(r) for r in s.records)
        newest = max(newest, s.attempt)
        if s.attempt <= old:
            if fresh:
                hit = max(hit, _max_step(fresh))
                first_fresh_t = first_fresh_t or s.t
            continue
        new_attempt_t = new_attempt_t or s.t
        if fresh and resumed_from is None:
            resumed_from = min(r["step"] for r in fresh) - 1
            resumed_t = s.t
    out: dict[str, Any] = {
        "attempt_at_fault": old,
        "step_logged_at_fault": _max_step(at_fault.records),
        "latest_at_fault": at_fault.latest or 0,
        "new_attempts": newest - old,
        "hit_step": hit,
        "resumed_from": resumed_from,
        "new_attempt_after_s": None if new_attempt_t is None else round(new_attempt_t - fault_at, 1),
    }
    if newest > old:
        out["steps_lost"] = None if resumed_from is None else max(0, hit - resumed_from)
        out["resume_s"] = None if resumed_t is None else round(resumed_t - fault_at, 1)
    else:
        out["steps_lost"] = 0
        out["resume_s"] = None if first_fresh_t is None else round(first_fresh_t - fault_at, 1)
    # Without a SIGTERM the most a fault may cost: the steps after the last committed checkpoint.
    out["steps_since_checkpoint"] = max(0, hit - (at_fault.latest or 0))
    return out


def settle_run_done(trial: dict[str, Any], total_steps: int) -> dict[str, Any]:
    """measure()'s figures, settled for a next attempt that logged no step because the interrupted
    one had already logged the last (a head killed near the end: the learners finish and commit the
    final step, then the next attempt finds that checkpoint and ends). That attempt trained nothing
    again, so nothing was lost; measure() alone cannot tell it from an attempt that never got going,
    which is why it leaves the figure empty."""
    if trial.get("new_attempts") and trial.get("resumed_from") is None and trial.get("steps_lost") is None \
            and (trial.get("hit_step") or 0) >= total_steps:
        return {**trial, "resumed_from": trial["hit_step"], "steps_lost": 0, "done_before_next_attempt": True}
    return trial


def final_lines(records: list[dict], torn: int, total_steps: int) -> dict[str, int]:
    """metrics.jsonl at the end against steps 1..total_steps, one line each."""
    steps = [r["step"] for r in records]
    return {"lines": len(steps) + torn, "lines_lost": len(set(range(1, total_steps + 1)) - set(steps)),
            "lines_duplicated": len(steps) - len(set(steps)), "lines_torn": torn,
            "lines_unexpected": len(set(steps) - set(range(1, total_steps + 1)))}


def compare_state_dicts(a: dict, b: dict) -> dict[str, Any]:
    """Two state dicts of tensors: equal with tolerance 0 (same names, shapes, dtypes and values)
    and the largest absolute difference over the tensors both have with the same shape."""
    import torch

    names = sorted(set(a) | set(b))
    missing = [n for n in names if n not in a or n not in b]
    mismatched, max_diff = [], 0.0
    for n in names:
        if n in missing:
            continue
        x, y = a[n], b[n]
        if x.shape != y.shape or x.dtype != y.dtype:
            mismatched.append(n)
            continue
        if not torch.allclose(x, y, rtol=0, atol=0, equal_nan=True):
            mismatched.append(n)
        if x.numel():
            max_diff = max(max_diff, (x.double() - y.double()).abs().max().item())
    return {"equal": not missing and not mismatched, "max_abs_diff": max_diff, "tensors": len(names),
            "tensors_differing": len(mismatched), "tensors_missing": len(missing)}


def verdict(fault: str, trial: dict) -> bool:
    """The trial met the goals: Succeeded, every metrics line once, and steps lost 0 (a SIGTERM,
    or the run untouched) or at most the steps since the last checkpoint (kill -9)."""
    lost = trial.get("steps_lost")
    if trial.get("phase") != "Succeeded" or lost is None:
        return False
    if trial.get("lines_lost") or trial.get("lines_duplicated") or trial.get("lines_torn"):
        return False
    if fault in SIGTERM_FAULTS or fault in UNTOUCHED_FAULTS:
        return lost == 0
    return lost <= trial.get("steps_since_checkpoint", 0)


def summarize(trials: list[dict]) -> list[dict]:
    """One row per fault, in the order the faults first ran."""
    order = list(dict.fromkeys(t["fault"] for t in trials))
    rows = []
    for fault in order:
        ts = [t for t in trials if t["fault"] == fault]
        done = [t for t in ts if not t.get("missed")]
        lost = [t["steps_lost"] for t in done if t.get("steps_lost") is not None]
        resume = [t["resume_s"] for t in done if t.get("resume_s") is not None]
        models = [t["model"] for t in done if isinstance(t.get("model"), dict)]
        rows.append({
            "fault": fault, "trials": len(ts), "missed": len(ts) - len(done),
            "succeeded": sum(t.get("phase") == "Succeeded" for t in done),
            "met_goal": sum(bool(t.get("met_goal")) for t in done),
            "steps_lost": lost, "steps_lost_max": max(lost, default=None),
            "steps_since_checkpoint": [t.get("steps_since_checkpoint") for t in done],
            "resume_s_median": round(statistics.median(resume), 1) if resume else None,
            "resume_s_max": max(resume, default=None),
            "lines_lost": sum(t.get("lines_lost") or 0 for t in done),
            "lines_duplicated": sum(t.get("lines_duplicated") or 0 for t in done),
            "new_attempts": sum(t.get("new_attempts") or 0 for t in done),
            "restarts": sum(t.get("restarts") or 0 for t in done),
            "preemptions": sum(t.get("preemptions") or 0 for t in done),
            "model_equal": sum(bool(m.get("equal")) for m in models), "models_compared": len(models),
            "model_max_abs_diff": max((m["max_abs_diff"] for m in models), default=None),
        })
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return " ".join(_cell(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:.3g}" if value and abs(value) < 1e-2 else f"{value:.1f}"
    return str(value)


COLUMNS = [("fault", "fault"), ("trials", "trials"), ("succeeded", "Succeeded"), ("met_goal", "met goal"),
           ("steps_lost", "steps lost (each trial)"), ("steps_since_checkpoint", "since checkpoint"),
           ("resume_s_median", "resume s (median)"), ("resume_s_max", "resume s (max)"),
           ("lines_lost", "lines lost"), ("lines_duplicated", "lines dup."), ("new_attempts", "new attempts"),
           ("restarts", "restarts"), ("preemptions", "preemptions"), ("model_equal", "model equal"),
           ("model_max_abs_diff", "max abs diff")]


def markdown_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = []
    for row in rows:
        cells = []
        for key, _ in COLUMNS:
            if key == "model_equal":
                cells.append(f"{row['model_equal']}/{row['models_compared']}")
            elif key == "succeeded" or key == "met_goal":
                cells.append(f"{row[key]}/{row['trials'] - row['missed']}")
            else:
                cells.append(_cell(row[key]))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *body]) + "\n"


def text_table(rows: list[dict]) -> str:
    lines = [[title for _, title in COLUMNS]]
    for row in rows:
        lines.append([f"{row['model_equal']}/{row['models_compared']}" if key == "model_equal" else _cell(row[key])
                      for key, _ in COLUMNS])
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines) + "\n"


def pick_moment(rnd: random.Random, steps: int) -> tuple[int, float]:
    """(the step whose metrics line starts the wait, the fraction of a step's time waited after it):
    a step from 1 to steps-4, so a fault comes mid-run with steps left to resume into."""
    return rnd.randint(1, max(1, steps - 4)), rnd.random()


def trial_random(seed: int, fault: str, index: int) -> random.Random:
    """The random source of one trial: the same moments for a fault's i-th trial whichever other
    faults run (a str seed is hashed with SHA-512, not Python's per-process hash)."""
    return random.Random(f"{seed}:{fault}:{index}")
