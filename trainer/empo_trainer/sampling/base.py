"""The sampler interface every backend implements."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, Sequence

# A prompt is either plain text or chat messages ({"role", "content"}); backends apply the chat
# template at their own boundary, as TRL's rollout_func contract asks.
Prompt = str | list[dict[str, Any]]


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None
    # one per prompt (vLLM draws sample j of a prompt seeded s from seed s + j); default: derived from seed
    prompt_seeds: tuple[int, ...] | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def stream_seed(*parts: int) -> int:
    """A seed for the random stream named by `parts` (run seed, step, rank, ...): a hash, so nearby
    names (step 1 rank 0, step 0 rank 1) get unrelated seeds. Below 2**62: room for + i x n."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


def prompt_seeds(params: SamplingParams, count: int) -> list[int | None]:
    """One seed per prompt, n apart: vLLM seeds sample j of a prompt seeded s with s + j (its
    parallel sampling), so prompt i gets base + i x n and the batch's count x n samples draw count x n
    different streams (seeds i apart let sample j of prompt i reuse sample j - 1 of prompt i + 1)."""
    if params.prompt_seeds is not None:
        if len(params.prompt_seeds) != count:
            raise ValueError(f"{len(params.prompt_seeds)} prompt seeds for {count} prompts")
        return list(params.prompt_seeds)
    if params.seed is None:
        return [None] * count
    base = stream_seed(params.seed)
    return [base + i * max(1, params.n) for i in range(count)]


@dataclass
class Generation:
    """The n completions of one prompt."""

    prompt_ids: list[int]
    completion_ids: list[list[int]]
    texts: list[str]
    logprobs: list[list[float]] = field(default_factory=list)  # per completion token, as sampled
    finished: list[bool] = field(default_factory=list)  # ended on EOS, not cut at max_new_tokens

    @property
    def num_tokens(self) -> int:
        return sum(len(c) for c in self.completion_ids)


class Sampler(Protocol):
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]: ...

    def load_weights(self, named: Iterable[tuple[str, Any]]) -> None:
        """Replace (some of) the policy weights after a learner update: (HF name, tensor) pairs."""
        ...

    def weights_loaded(self) -> None:
        """Every bucket of one sync has arrived (drop caches that hold the old weights)."""
        ...
