"""A fault-trial series (benchmarks/fault_trials.py): which trials run in what order, the trials of
earlier outputs of the same series folded in, and every trial judged by today's rules. Pure: no
node, no store (tests/unit/benchmarks/test_fault_trials.py)."""

from __future__ import annotations

from benchmarks.fault_measure import EXTRA_FAULTS, FAULTS, settle_run_done, verdict

RUN_CONFIG = ("seed", "steps", "checkpoint_every", "max_restarts", "outage_s", "kubelet_down_s")


def plan_trials(faults: list[str], first: int, repeats: int) -> list[tuple[str, int]]:
    """(fault, trial index) in the order they run: round by round, so that a run stopped early has
    as many trials of each fault as the others, give or take one."""
    return [(fault, i) for i in range(first, first + repeats) for fault in faults]


def included_trials(config: dict, earlier: dict, source: str, plan: list[tuple[str, int]]) -> list[dict]:
    """The trials of an earlier output (`--include`) that belong to this series: same seed and run
    configuration (else the moments or the run differ and the counts would mix two experiments), of a
    fault asked for, and not planned again here."""
    theirs = earlier.get("config", {})
    differ = [k for k in RUN_CONFIG if k in theirs and theirs[k] != config[k]]
    if differ:
        raise ValueError(f"{source}: {', '.join(f'{k} {theirs[k]!r} (here {config[k]!r})' for k in differ)}: "
                         "not the same series")
    planned = set(plan)
    out = []
    for t in earlier.get("trials", []):
        if t["fault"] not in config["faults"]:
            continue
        if (t["fault"], t["index"]) in planned:
            raise ValueError(f"{source}: {t['fault']} trial {t['index']} is planned again here "
                             f"(--first-trial {min(i for _, i in plan)}); start after it")
        out.append({"from": source, **t})  # a trial an output had itself included keeps its source
    return out


def merge_trials(batches: list[list[dict]]) -> list[dict]:
    """The trials of several outputs, one per (fault, trial index): a trial run again (a later
    `--include`) replaces the earlier one."""
    merged: dict[tuple[str, int], dict] = {}
    for batch in batches:
        for t in batch:
            merged.pop((t["fault"], t["index"]), None)
            merged[(t["fault"], t["index"])] = t
    order = {f: i for i, f in enumerate(FAULTS + EXTRA_FAULTS)}
    return sorted(merged.values(), key=lambda t: (order.get(t["fault"], len(order)), t["index"]))


def judge(trials: list[dict], total_steps: int) -> None:
    """Every trial judged by today's rules, those of an earlier output (`--include`) too."""
    for t in trials:
        if t.get("fault_at_s") is None or t.get("missed"):
            continue
        t.update(settle_run_done(t, total_steps))
        t["met_goal"] = verdict(t["fault"], t)
