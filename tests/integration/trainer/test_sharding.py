"""learner.sharding for real: two FSDP2 learner processes (gloo on CPU) against one process.

Each run is tests/integration/trainer/sharded_step.py: the learner's GRPOConfig from the spec, one GRPO step
of TRL on a fixed batch of the tiny random model, then the full weights gathered through
iter_full_weights (what the samplers receive)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_step(out: Path, processes: int, *args: str) -> dict:
    """Start `processes` learner processes the way the driver's rendezvous sets them up."""
    out.mkdir(parents=True, exist_ok=True)
    port = _port()
    procs = []
    for rank in range(processes):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   WORLD_SIZE=str(processes), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(processes),
                   OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        if processes == 1:
            for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
                env.pop(key)
        procs.append(subprocess.Popen([sys.executable, str(REPO / "tests/integration/trainer/sharded_step.py"), "--out", str(out),
                                       *args], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    for p in procs:
        output, _ = p.communicate(timeout=600)
        assert p.returncode == 0, output[-4000:]
    step = torch.load(out / "step.pt")
    step["ranks"] = [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
    return step


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return run_step(tmp_path_factory.mktemp("single"), 1, "--sharding", "none")


def test_two_fsdp_learners_shard_the_model_and_match_one_process(single, tmp_path):
    sharded = run_step(tmp_path, 2, "--sharding", "fsdp", "--save")
    total = sum(t.numel() for t in single["after"].values())
    ranks = sharded["ranks"]
    assert all(r["sharded"] for r in ranks) and not single["ranks"][0]["sharded"]
    # each rank holds its half of every parameter (FSDP2 splits dim 0; none here is odd-sized)
    assert [r["local"] for r in ranks] == [total // 2, total // 2]
    # the same step: gradient norm over the whole model, and every updated weight
    assert sharded["log"]["grad_norm"] == pytest.approx(single["log"]["grad_norm"], rel=1e-4)
    assert sharded["log"]["loss"] == pytest.approx(single["log"]["loss"], abs=1e-6)
    assert list(sharded["after"]) == list(single["after"])  # HF names, no FSDP prefixes
    for name, weight in single["after"].items():
        torch.testing.assert_close(sharded["after"][name], weight, rtol=0, atol=1e-5, msg=name)
    # the checkpoint rank 0 commits is a plain HF model with the same weights (what evals and resumes load)
    saved = load_file(tmp_path / "trainer" / "checkpoint-1" / "model.safetensors")
    for name, weight in sharded["after"].items():
        assert torch.equal(saved[name], weight), name
    moved = sum(int((single["after"][n] != single["before"][n]).sum()) for n in single["after"])
    assert moved > total // 10  # the step did update the model (the comparison is not of two no-ops)


def test_bf16_compute_keeps_fp32_master_weights_at_lr_1e_6(tmp_path):
    """At the paper's lr, bf16 weights would round most updates away; fp32 masters keep them."""
    step = run_step(tmp_path, 2, "--sharding", "fsdp", "--bf16", "--lr", "1e-6")
    assert all(r["dtypes"] == ["torch.float32"] for r in step["ranks"])  # masters stay fp32 under bf16 compute
    before, after = step["before"], step["after"]
    # Embedding rows of tokens the batch never uses get no gradient; every other weight should move.
    dense = [n for n in after if "embed_tokens" not in n]
    changed = sum(int((after[n] != before[n]).sum()) for n in dense) / sum(after[n].numel() for n in dense)
    assert changed > 0.99, f"only {changed:.1%} of the weights changed"
    norms = [n for n in dense if "norm" in n]
    assert norms and all(bool((after[n] != before[n]).all()) for n in norms)
    # the same update in bf16 storage: what a bf16 master copy would have kept
    kept = sum(int((after[n].bfloat16() != before[n].bfloat16()).sum()) for n in dense) / \
        sum(after[n].numel() for n in dense)
    assert kept < 0.2
