"""`empo plan`: the capacity plan against figures computed by hand."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from empo_api.capacity import GIB, KNOWN_MODELS, ModelShape, plan_capacity
from empo_api.models import parse_run

REPO = Path(__file__).resolve().parents[3]
PAPER = REPO / "examples" / "math-s3.yaml"
QWEN_7B = KNOWN_MODELS["qwen/qwen2.5-math-7b"]


def paper_spec(**learner):
    doc = yaml.safe_load(PAPER.read_text())
    doc["spec"]["learner"].update(learner)
    return parse_run(doc).spec


def test_qwen_7b_shape_gives_its_published_parameter_count():
    # Qwen2.5-7B: 28 layers of 233,057,792 (attention with q/k/v biases, SwiGLU 18944), untied
    # 152064 x 3584 embedding and head, final norm
    assert QWEN_7B.layer_params == 233_057_792
    assert QWEN_7B.params == 28 * 233_057_792 + 2 * 152064 * 3584 + 3584 == 7_615_616_512


def test_the_paper_setup_fits_8_h100s():
    """examples/math-s3.yaml: 4 vLLM engines + 4 FSDP learners, micro-batch 7 x 2560 tokens, bf16 compute."""
    plan = plan_capacity(paper_spec(), QWEN_7B)
    assert plan.gpu_bytes == 80 * GIB  # from nodeSelector NVIDIA-H100-80GB-HBM3
    sampler, learner = plan.estimates
    P = 7_615_616_512
    hand = {  # bytes, P parameters over 4 learner processes
        "weights (fp32 master)": 4 * P / 4,                       # 7.09 GiB
        "gradients (fp32)": 4 * P / 4,                            # 7.09 GiB
        "optimizer (AdamW, fp32)": 8 * P / 4,                     # 14.19 GiB
        "gathered units (FSDP2)": (2 * 2 + 4) * 152064 * 3584,    # largest unit: the 545M-row embedding, 4.06 GiB
        "activations": 28 * 7 * 2560 * 3584 * 2 + 34 * 7 * 2560 * 3584,  # checkpointed inputs + one layer, 5.38 GiB
        # TRL's fused head: one 4096 x 32768 tile (bf16 + fp32), fp32 head and hidden-state gradients,
        # 2.97 GiB (the full logits, 3 x 7 x 2048 x 152064 x 2 = 12.18 GiB, are never materialised)
        "LM head (TRL fused, tiled)": 4096 * 32768 * 6 + 4 * 152064 * 3584 + 4 * 7 * 2048 * 3584,
        "reserve": 3 * GIB,
    }
    assert learner.parts == pytest.approx(hand)
    assert learner.total / GIB == pytest.approx(43.79, abs=0.01) and learner.fits  # 53.00 when it counted full logits
    assert sampler.parts["weights"] == 2 * P  # bf16, TP 1: 14.19 GiB
    assert sampler.parts["KV cache"] / GIB == pytest.approx(0.7 * 80 - 2 * P / GIB - 2, abs=1e-9)  # 39.81 GiB
    assert "291 sequences of 2560 tokens" in " ".join(sampler.notes)  # 39.81 GiB / (57344 B/token x 2560)
    assert plan.fits and plan.warnings == []


def test_unsharded_7b_learner_does_not_fit_and_says_so():
    plan = plan_capacity(paper_spec(sharding="none"), QWEN_7B)
    learner = plan.estimates[1]
    P = 7_615_616_512
    assert learner.parts["weights (fp32 master)"] + learner.parts["gradients (fp32)"] + \
        learner.parts["optimizer (AdamW, fp32)"] == 16 * P  # 113.5 GiB whole on every GPU under DDP
    assert learner.parts["autocast weight cache"] == 2 * P
    assert not plan.fits
    assert plan.warnings == [f"learner: {learner.total / GIB:.1f} GiB per GPU exceeds 80.0 GiB"]


def test_shape_from_a_config_json():
    config = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 49152, "tie_word_embeddings": True}
    assert ModelShape.from_config(config) == KNOWN_MODELS["bundled:tiny-random"]
    assert ModelShape.from_config(config).params == 3_219_776  # what the tiny model's parameters add up to
    with pytest.raises(ValueError, match="vocab_size"):
        ModelShape.from_config({k: v for k, v in config.items() if k != "vocab_size"})


def empo(*args):
    return subprocess.run([sys.executable, "-m", "empo_cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO)


def test_empo_plan_prints_per_gpu_figures_and_fails_what_does_not_fit(tmp_path):
    ok = empo("plan", PAPER)
    assert ok.returncode == 0, ok.stderr
    assert "total per GPU                         43.79 GiB of 80.00  fits" in ok.stdout
    doc = yaml.safe_load(PAPER.read_text())
    doc["spec"]["learner"]["sharding"] = "none"
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(doc))
    bad = empo("plan", tmp_path / "ddp.yaml")
    assert bad.returncode == 1 and "DOES NOT FIT" in bad.stdout and "warning: learner:" in bad.stdout
    doc["spec"]["model"]["source"] = "acme/unknown-13b"
    (tmp_path / "unknown.yaml").write_text(yaml.safe_dump(doc))
    unknown = empo("plan", tmp_path / "unknown.yaml")
    assert unknown.returncode == 2 and "--model-config" in unknown.stderr and "spec.model.source" in unknown.stderr


def test_pods_without_a_cpu_per_process_are_flagged():
    doc = yaml.safe_load(PAPER.read_text())
    doc["spec"]["sampler"].update(replicas=1, gpusPerReplica=8)
    doc["spec"]["learner"].update(replicas=1, gpusPerReplica=8)
    doc["spec"]["algorithm"]["gradientAccumulation"] = 14  # 784 / (14 x 8) = 7 per micro-batch
    doc["spec"]["ray"]["worker"] = {"cpu": "4", "memory": "512Gi"}
    plan = plan_capacity(parse_run(doc).spec, QWEN_7B)
    assert [w for w in plan.warnings if "CPUs" in w] == [
        "sampler pod: 8 processes need 8 CPUs, ray.worker.cpu is 4: the actors that do not fit never start",
        "learner pod: 8 processes need 8 CPUs, ray.worker.cpu is 4: the actors that do not fit never start"]


@pytest.mark.parametrize("example", sorted(p.name for p in (REPO / "examples").glob("*.yaml")))
def test_every_example_fits_its_gpus(example):
    docs = [d for d in yaml.safe_load_all((REPO / "examples" / example).read_text()) if d and d.get("kind") == "EmpoRun"]
    for doc in docs:
        spec = parse_run(doc).spec
        plan = plan_capacity(spec, KNOWN_MODELS[spec.model.source.lower()])
        assert plan.fits, plan.warnings
