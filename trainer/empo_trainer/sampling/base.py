"""The sampler interface every backend implements."""

from __future__ import annotations

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
    # one per prompt (vLLM draws each prompt's samples from its own stream); default: derived from seed
    prompt_seeds: tuple[int, ...] | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def prompt_seeds(params: SamplingParams, count: int) -> list[int | None]:
    """One seed per prompt: with a shared seed, sample i of every prompt would draw the same random stream."""
    if params.prompt_seeds is not None:
        if len(params.prompt_seeds) != count:
            raise ValueError(f"{len(params.prompt_seeds)} prompt seeds for {count} prompts")
        return list(params.prompt_seeds)
    if params.seed is None:
        return [None] * count
    return [(params.seed * 1_000_003 + i) % 2**63 for i in range(count)]


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
