"""benchmarks/fault_measure.py: metrics polls and statuses into figures (no servers)."""

import torch

from benchmarks import fault_measure as fm


def line(step, seconds=1.0):
    return {"step": step, "reward": 0.5, "step_seconds": seconds}


def lines(first, last, seconds=1.0):
    return [line(s, seconds) for s in range(first, last + 1)]


def test_parse_metrics_counts_a_torn_line_and_skips_blank_ones():
    records, torn = fm.parse_metrics('{"step": 1}\n\n{"step": 2, "x": 1}\n{"step": 3, "x"\n[1]\n')
    assert [r["step"] for r in records] == [1, 2] and torn == 2


def test_newest_attempt_and_latest_step():
    keys = ["runs/ns/r/attempts/attempt-000001.json", "runs/ns/r/attempts/attempt-000012.json",
            "runs/ns/r/attempts/attempt-x.json", "runs/ns/r/metrics.jsonl"]
    assert fm.newest_attempt(keys) == 12 and fm.newest_attempt([]) == 0
    assert fm.parse_latest_step(b'{"step": 8, "manifestSha256": "ab"}') == 8
    assert fm.parse_latest_step(None) is None and fm.parse_latest_step(b"garbage") is None


def test_a_sigterm_that_finishes_its_step_loses_none():
    snaps = [fm.Snapshot(5, 1, lines(1, 4), 4), fm.Snapshot(10, 1, lines(1, 5), 4),
             # the fault at 10.5; the old attempt finishes step 6 and commits it
             fm.Snapshot(12, 1, lines(1, 6), 6),
             fm.Snapshot(30, 2, lines(1, 6), 6),  # the next attempt claimed; nothing trimmed
             fm.Snapshot(50, 2, lines(1, 6) + [line(7, 2.0)], 6)]
    m = fm.measure(snaps, 10.5)
    assert m["attempt_at_fault"] == 1 and m["step_logged_at_fault"] == 5 and m["latest_at_fault"] == 4
    assert m["hit_step"] == 6 and m["resumed_from"] == 6 and m["steps_lost"] == 0
    assert m["resume_s"] == 39.5 and m["new_attempts"] == 1 and m["new_attempt_after_s"] == 19.5
    trial = {**m, "phase": "Succeeded", "lines_lost": 0, "lines_duplicated": 0, "lines_torn": 0}
    assert fm.verdict("drain", trial)
    assert not fm.verdict("drain", {**trial, "steps_lost": 1})
    assert not fm.verdict("drain", {**trial, "lines_duplicated": 1})
    assert not fm.verdict("drain", {**trial, "phase": "Failed"})


def test_a_kill_costs_the_steps_since_the_last_checkpoint():
    snaps = [fm.Snapshot(10, 3, lines(1, 6), 4),
             fm.Snapshot(20, 4, lines(1, 4), 4),  # the next attempt trimmed to its checkpoint
             # steps 5 and 6 trained again: other timings, so fresh lines
             fm.Snapshot(40, 4, lines(1, 4) + lines(5, 5, 3.0), 4),
             fm.Snapshot(45, 4, lines(1, 4) + lines(5, 6, 3.0), 4)]
    m = fm.measure(snaps, 11)
    assert m["hit_step"] == 6 and m["resumed_from"] == 4 and m["steps_lost"] == 2
    assert m["steps_since_checkpoint"] == 2 and m["resume_s"] == 29
    trial = {**m, "phase": "Succeeded", "lines_lost": 0, "lines_duplicated": 0, "lines_torn": 0}
    assert fm.verdict("kill-head", trial)
    assert not fm.verdict("kill-head", {**trial, "steps_lost": 3})
    assert not fm.verdict("drain", trial)  # with a SIGTERM the goal is 0


def test_a_same_text_line_after_the_resume_is_not_taken_for_a_new_one():
    # The next attempt's first poll shows the old step 4 line unchanged: not fresh, not the resume.
    snaps = [fm.Snapshot(1, 1, lines(1, 4), 4), fm.Snapshot(3, 2, lines(1, 4), 4),
             fm.Snapshot(9, 2, lines(1, 4) + lines(5, 5, 7.0), 4)]
    m = fm.measure(snaps, 2)
    assert m["resumed_from"] == 4 and m["steps_lost"] == 0 and m["resume_s"] == 7


def test_a_fault_the_run_waits_out_has_no_new_attempt():
    snaps = [fm.Snapshot(10, 1, lines(1, 3), None), fm.Snapshot(20, 1, lines(1, 3), None),
             fm.Snapshot(45, 1, lines(1, 4), 4)]
    m = fm.measure(snaps, 11)
    assert m["new_attempts"] == 0 and m["resumed_from"] is None and m["steps_lost"] == 0
    assert m["resume_s"] == 34 and m["steps_since_checkpoint"] == 4
    trial = {**m, "phase": "Succeeded", "lines_lost": 0, "lines_duplicated": 0, "lines_torn": 0}
    assert fm.verdict("s3-outage", trial)


def test_a_new_attempt_that_never_logged_has_no_figure():
    m = fm.measure([fm.Snapshot(1, 1, lines(1, 2)), fm.Snapshot(5, 2, lines(1, 2))], 2)
    assert m["new_attempts"] == 1 and m["steps_lost"] is None and m["resume_s"] is None
    assert not fm.verdict("kill-head", {**m, "phase": "Failed"})


def test_a_fault_before_any_poll():
    m = fm.measure([fm.Snapshot(5, 1, lines(1, 1))], 2)
    assert m["attempt_at_fault"] == 0 and m["new_attempts"] == 1 and m["resumed_from"] == 0
    assert m["steps_lost"] == 0


def test_final_lines():
    records = [line(s) for s in (1, 2, 2, 4, 5, 6)]
    assert fm.final_lines(records, 1, 5) == {"lines": 7, "lines_lost": 1, "lines_duplicated": 1,
                                             "lines_torn": 1, "lines_unexpected": 1}
    assert fm.final_lines(lines(1, 3), 0, 3)["lines_lost"] == 0


def test_compare_state_dicts():
    a = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}
    assert fm.compare_state_dicts(a, {k: v.clone() for k, v in a.items()}) == {
        "equal": True, "max_abs_diff": 0.0, "tensors": 2, "tensors_differing": 0, "tensors_missing": 0}
    b = {"w": a["w"] + torch.tensor([[1e-7, 0, 0], [0, 0, 0]]), "b": a["b"]}
    diff = fm.compare_state_dicts(a, b)
    assert not diff["equal"] and diff["tensors_differing"] == 1 and 0 < diff["max_abs_diff"] < 1e-6
    assert fm.compare_state_dicts(a, {"w": a["w"]})["tensors_missing"] == 1
    shaped = fm.compare_state_dicts(a, {"w": a["w"].reshape(3, 2), "b": a["b"]})
    assert not shaped["equal"] and shaped["tensors_differing"] == 1
    typed = fm.compare_state_dicts(a, {"w": a["w"].double(), "b": a["b"]})
    assert not typed["equal"]


def test_summary_and_tables():
    base = {"phase": "Succeeded", "lines_lost": 0, "lines_duplicated": 0, "new_attempts": 1, "restarts": 0,
            "preemptions": 1, "steps_since_checkpoint": 1, "met_goal": True,
            "model": {"equal": True, "max_abs_diff": 0.0}}
    trials = [{"fault": "drain", "steps_lost": 0, "resume_s": 60.0, **base},
              {"fault": "drain", "steps_lost": 0, "resume_s": 80.0, **base,
               "model": {"equal": False, "max_abs_diff": 2e-7}},
              {"fault": "kill-head", "steps_lost": 2, "resume_s": 90.0, **base, "met_goal": True},
              {"fault": "kill-head", "missed": "step 3 not reached"}]
    rows = fm.summarize(trials)
    assert [r["fault"] for r in rows] == ["drain", "kill-head"]
    drain, kill = rows
    assert drain["trials"] == 2 and drain["succeeded"] == 2 and drain["steps_lost"] == [0, 0]
    assert drain["resume_s_median"] == 70.0 and drain["model_equal"] == 1 and drain["models_compared"] == 2
    assert drain["model_max_abs_diff"] == 2e-7 and drain["preemptions"] == 2
    assert kill["trials"] == 2 and kill["missed"] == 1 and kill["steps_lost_max"] == 2
    md = fm.markdown_table(rows)
    assert md.splitlines()[0].startswith("| fault | trials |") and "| drain | 2 | 2/2 | 2/2 | 0 0 |" in md
    assert "| kill-head | 2 | 1/1 |" in md and "2e-07" in md
    text = fm.text_table(rows)
    assert text.splitlines()[1].startswith("drain") and len(text.splitlines()) == 3


def test_moments_are_seeded_per_trial_and_mid_run():
    a = fm.pick_moment(fm.trial_random(24, "drain", 0), 12)
    assert a == fm.pick_moment(fm.trial_random(24, "drain", 0), 12)
    assert a != fm.pick_moment(fm.trial_random(24, "drain", 1), 12)
    moments = [fm.pick_moment(fm.trial_random(s, "kill-head", 0), 12) for s in range(200)]
    assert {step for step, _ in moments} == set(range(1, 9)) and all(0 <= f < 1 for _, f in moments)


def test_a_next_attempt_that_found_the_run_done_lost_nothing():
    # kill -9 of the head at step 8: the learner trains on to step 12 and commits it; the entry
    # point's next attempt finds that checkpoint and ends without a step to log.
    snaps = [fm.Snapshot(10, 1, lines(1, 8), 8), fm.Snapshot(40, 1, lines(1, 12), 12),
             fm.Snapshot(50, 2, lines(1, 12), 12)]
    m = fm.measure(snaps, 11)
    assert m["new_attempts"] == 1 and m["hit_step"] == 12 and m["steps_lost"] is None
    settled = fm.settle_run_done(m, 12)
    assert settled["steps_lost"] == 0 and settled["resumed_from"] == 12 and settled["done_before_next_attempt"]
    trial = {**settled, "phase": "Succeeded", "lines_lost": 0, "lines_duplicated": 0, "lines_torn": 0}
    assert fm.verdict("kill-head", trial)
    # an attempt that never logged while steps were still to train stays without a figure
    assert fm.settle_run_done(m, 13)["steps_lost"] is None
    early = fm.measure([fm.Snapshot(1, 1, lines(1, 2)), fm.Snapshot(5, 2, lines(1, 2))], 2)
    assert fm.settle_run_done(early, 12) == early
