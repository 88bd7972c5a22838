"""The sampler interface every backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

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

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


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

    def load_weights(self, state_dict: dict[str, Any]) -> None:
        """Replace the policy weights (after a learner update)."""
        ...
