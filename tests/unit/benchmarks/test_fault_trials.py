"""The CLI of benchmarks/fault_trials.py: the faults asked for, the defaults, an action for every fault
(no servers)."""

import argparse

import pytest

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
