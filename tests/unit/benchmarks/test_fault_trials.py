"""The CLI of benchmarks/fault_trials.py and its series (benchmarks/fault_series.py): the faults asked
for, the defaults, an action for every fault, the trials planned and merged (no servers)."""

import argparse
import json

import pytest

from benchmarks import fault_series as fs
from benchmarks import fault_trials as ft
from benchmarks.fault_actions import FAULT_ACTIONS
from benchmarks.fault_measure import EXTRA_FAULTS, FAULTS


def test_fault_selection():
    assert ft.parse_faults("all") == list(FAULTS)
    assert ft.parse_faults("drain, kill-head") == ["drain", "kill-head"]
    assert ft.parse_faults("none") == ["none"]
    with pytest.raises(argparse.ArgumentTypeError):
        ft.parse_faults("drain,reboot")
    args = ft.build_parser().parse_args(["--quick", "--faults", "s3-outage"])
    assert args.quick and args.faults == ["s3-outage"] and args.repeats == 5 and args.steps == 12
    assert args.checkpoint_every == 4 and args.max_restarts == 3 and args.reference
    assert set(FAULT_ACTIONS) == set(FAULTS + EXTRA_FAULTS)


def test_trials_run_round_by_round_from_the_first_index():
    plan = fs.plan_trials(["drain", "kill-head"], 1, 2)
    assert plan == [("drain", 1), ("kill-head", 1), ("drain", 2), ("kill-head", 2)]
    args = ft.build_parser().parse_args(["--first-trial", "1", "--repeats", "4", "--include", "a.json"])
    assert args.first_trial == 1 and [str(p) for p in args.include] == ["a.json"]


def _config(**changes):
    args = ft.build_parser().parse_args(["--faults", "drain,s3-outage"])
    return {**vars(args), **changes}


def test_an_earlier_series_joins_the_summary_when_it_is_the_same_experiment():
    earlier = {"config": {"seed": 24, "steps": 12, "checkpoint_every": 4, "max_restarts": 3},
               "trials": [{"fault": "drain", "index": 0, "steps_lost": 0},
                          {"fault": "kill-head", "index": 0, "steps_lost": 2}]}
    plan = fs.plan_trials(["drain", "s3-outage"], 1, 4)
    got = fs.included_trials(_config(), earlier, "early.json", plan)
    assert got == [{"fault": "drain", "index": 0, "steps_lost": 0, "from": "early.json"}]  # kill-head not asked

    with pytest.raises(ValueError, match="seed 7 .here 24.*not the same series"):
        fs.included_trials(_config(), {**earlier, "config": {**earlier["config"], "seed": 7}}, "e.json", plan)
    with pytest.raises(ValueError, match="drain trial 0 is planned again"):
        fs.included_trials(_config(), earlier, "e.json", fs.plan_trials(["drain"], 0, 5))


def test_summarize_only_judges_an_earlier_output_by_todays_rules(tmp_path):
    done_run = {"fault": "kill-head", "index": 1, "fault_at_s": 92.7, "phase": "Succeeded", "new_attempts": 1,
                "hit_step": 12, "resumed_from": None, "steps_lost": None, "resume_s": None,
                "steps_since_checkpoint": 8, "lines_lost": 0, "lines_duplicated": 0, "lines_torn": 0,
                "met_goal": False, "model": {"equal": True, "max_abs_diff": 0.0}}
    earlier = tmp_path / "run.json"
    earlier.write_text(json.dumps({"config": {"seed": 24, "steps": 12, "checkpoint_every": 4, "max_restarts": 3},
                                   "trials": [done_run]}))
    out, md = tmp_path / "all.json", tmp_path / "all.md"
    assert ft.main(["--summarize-only", "--include", str(earlier), "--out", str(out), "--md", str(md)]) == 0
    result = json.loads(out.read_text())
    assert result["trials"][0]["met_goal"] and result["trials"][0]["steps_lost"] == 0
    assert result["summary"][0]["fault"] == "kill-head" and result["summary"][0]["met_goal"] == 1
    assert "| kill-head | 1 |" in md.read_text() and str(earlier) in md.read_text()


def test_a_trial_run_again_replaces_the_earlier_one_and_sources_are_kept():
    first = [{"fault": "drain", "index": 0, "v": 1, "from": "older.json"}, {"fault": "kill-head", "index": 0, "v": 1}]
    second = [{"fault": "drain", "index": 0, "v": 2}]
    merged = fs.merge_trials([first, second])
    assert sorted((t["fault"], t["v"]) for t in merged) == [("drain", 2), ("kill-head", 1)]
    earlier = {"config": {"seed": 24}, "trials": first}
    got = fs.included_trials(_config(faults=["drain", "kill-head"]), earlier, "mine.json", [])
    assert [t["from"] for t in got] == ["older.json", "mine.json"]
