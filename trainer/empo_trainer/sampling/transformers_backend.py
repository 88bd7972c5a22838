"""The CPU sampler: batched `transformers` generation with the sampled tokens' log-probs."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..model_source import load_causal_lm, load_tokenizer
from .base import Generation, Prompt, SamplingParams, prompt_seeds
from .chat import render_prompt_ids


class TransformersSampler:
    def __init__(self, model_path: str, dtype: str = "float32", max_prompt_length: int | None = None,
                 batch_size: int = 64, device: str | None = None, trust_remote_code: bool = False):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
        self.model = load_causal_lm(model_path, dtype, trust_remote_code=trust_remote_code).to(self.device).eval()
        self.max_prompt_length = max_prompt_length
        self.batch_size = batch_size  # sequences per generate() call, bounds activation memory
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, max_prompt_length: int | None = None, batch_size: int = 64):
        """A sampler that generates with an existing model (colocated with the learner: no weight copy)."""
        self = cls.__new__(cls)
        self.model, self.tokenizer = model, tokenizer
        self.device = str(next(model.parameters()).device)
        self.max_prompt_length, self.batch_size = max_prompt_length, batch_size
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
        return self

    def load_weights(self, named: Any) -> None:
        # a bucket of (name, tensor) pairs (or a whole state dict): strict=False loads the part given
        self.model.load_state_dict(dict(named), strict=False)

    def weights_loaded(self) -> None:
        pass

    def _trim(self, ids: list[int]) -> list[int]:
        for i, tok in enumerate(ids):
            if tok in self.eos_ids:
                return ids[: i + 1]  # keep the EOS: the learner must see the sequence ended
        return ids

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]:
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling, even when colocated with a training model
        try:
            return self._generate(prompts, params)
        finally:
            self.model.train(was_training)

    @torch.inference_mode()
    def _generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]:
        seeds = prompt_seeds(params, len(prompts))
        if seeds and seeds[0] is not None:
            # One stream for the whole call (generate() has one generator), named by the first
            # prompt's seed: engines that share a batch get disjoint prompt seeds, hence own streams.
            torch.manual_seed(seeds[0])
        prompt_ids = [render_prompt_ids(self.tokenizer, p, self.max_prompt_length) for p in prompts]
        results = [Generation(prompt_ids=ids, completion_ids=[], texts=[], logprobs=[], finished=[]) for ids in prompt_ids]
        per_call = max(1, self.batch_size // max(1, params.n))
        for start in range(0, len(prompt_ids), per_call):
            chunk = prompt_ids[start:start + per_call]
            width = max(len(ids) for ids in chunk)
            pad = self.tokenizer.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in chunk], device=self.device)
            attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in chunk], device=self.device)
            sampling = ({"do_sample": False} if params.greedy else
                        {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0})
            out = self.model.generate(
                input_ids=input_ids, attention_mask=attention, max_new_tokens=params.max_new_tokens,
                num_return_sequences=params.n, pad_token_id=pad, return_dict_in_generate=True, output_scores=True,
                **sampling,
            )
            new_tokens = out.sequences[:, width:]
            scores = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            for row in range(new_tokens.shape[0]):
                gen = results[start + row // params.n]
                ids = self._trim(new_tokens[row].tolist())
                gen.completion_ids.append(ids)
                gen.logprobs.append(scores[row, : len(ids)].float().tolist())
                gen.texts.append(self.tokenizer.decode(ids, skip_special_tokens=True))
                gen.finished.append(bool(ids) and ids[-1] in self.eos_ids)
        return results
