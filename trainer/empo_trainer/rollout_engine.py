"""The rollout engine: TRL's `rollout_func`, fed by our samplers.

It takes completions from sampler actors TRL does not own (or from a sampler inside the learner
process), keeps their weights in sync with the learner's, samples one generation ahead when
sampler.maxStaleness allows it, and times each rollout (RolloutStats) for the step record.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from empo_api.models import EmpoRunSpec


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _learner_device_uuid() -> str:
    import torch

    return str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)


def _process_index(trainer: Any) -> int:
    """This learner's data-parallel rank (TRL's accelerator); 0 for a trainer without one."""
    return getattr(getattr(trainer, "accelerator", None), "process_index", 0)


def _one_per_group(prompts: Sequence[Any], group: int) -> list[Any]:
    """The prompts the engines sample, one per group of G copies.

    TRL owns the repetition: its RepeatSampler hands rollout_func every prompt G times in a row
    (TRL 1.16; the rollout_func docstring's "no duplication" is not what it does) and takes one
    completion per copy back. The engines sample G completions per prompt (SamplingParams.n: one
    prefill, one seed per prompt), so the copies are collapsed here, the engine's only place for it,
    and __call__ answers with each prompt's G completions in its copies' places. That whole groups
    reach each process is the spec validator's check (EmpoRunSpec._split_batch); copies that are not
    copies mean a TRL that passes prompts another way, which would silently train on wrong prompts."""
    starts = list(prompts[::group])
    for i, prompt in enumerate(prompts):
        if prompt != starts[i // group]:
            raise RuntimeError(
                f"rollout got {len(prompts)} prompts that are not numGenerations={group} copies of each prompt in a "
                f"row (prompt {i} differs from prompt {i - i % group}): the installed TRL passes prompts in a way "
                "this engine does not know")
    return starts


@dataclass
class RolloutStats:
    tokens: int = 0
    generation_seconds: float = 0.0
    sync_seconds: float = 0.0
    sync_bytes: int = 0
    batch_digest: str = ""  # identifies the step's prompts: a resumed run must see the same data order
    resampled_fraction: float | None = None  # dynamic sampling: share of groups replaced by new prompts
    # Separate engines only: the learner step whose weights generated the rollout, and how many
    # optimizer steps the learner is past it when it trains on it (0 synchronous, <= maxStaleness)
    policy_version: int | None = None
    staleness: int | None = None
    wait_seconds: float = 0.0  # the learner idle, waiting for this rollout (one-step-off: what overlap left)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.generation_seconds if self.generation_seconds else 0.0


@dataclass
class _Pending:
    """A rollout sampled ahead (one-step-off)."""

    step: int  # the global step whose rollout it is
    passed: list[Any]  # the prompts as TRL will pass them at that step (G copies each), to recognise them
    prompts: list[Any]  # one per group, as the engines sample them
    launched: list[tuple[int, Any]]  # RolloutEngine._launch's futures
    version: int  # the learner step whose weights the engines hold when they sample it
    loads: list[Any] = field(default_factory=list)  # weight loads queued before it (overlapped sync)


@dataclass
class RolloutEngine:
    """TRL `rollout_func`: completions from a colocated sampler or from sampler actors.

    Remote samplers get the learner's weights (weight_sync.py) before the first rollout after
    every optimizer step; a sync that takes longer than `sync_timeout` fails the run rather than
    hanging it.
    """

    spec: EmpoRunSpec
    local_sampler: Any = None
    remote_samplers: Sequence[Any] = ()
    sync_timeout: float = 600.0
    stats: RolloutStats = field(default_factory=RolloutStats)
    refill: Any = None  # dynamic_sampling.GroupRefill when algorithm.filteredGroups is resample
    # Engines this rank pushes weights to; None: its own (remote_samplers). Sharded learners set
    # every engine on rank 0 and none elsewhere: only rank 0 receives the gathered weights.
    sync_samplers: Sequence[Any] | None = None
    # The sampler engines start from the checkpoint the learner loads (SamplerActor resolves the
    # same spec.model.source), so a fresh run's first sync has nothing to send.
    engines_hold_initial_weights: bool = True
    _synced_step: int = -1
    _weight_sync: Any = None
    _pending: Any = None  # one-step-off: the next rollout, sampled while the learner updates on this one

    @property
    def one_step_off(self) -> bool:
        """Whether the engines sample generation n+1 while the learner updates on generation n:
        engines of their own and sampler.maxStaleness allowing a whole generation of lag
        (algorithm.updatesPerGeneration optimizer steps)."""
        return (bool(self.remote_samplers) and self.local_sampler is None
                and self.spec.sampler.max_staleness >= self.spec.algorithm.updates_per_generation)

    def sync(self, trainer: Any, wait: bool = True) -> list[Any]:
        """Push the policy to the sampler engines (weight_sync.py: NCCL to vLLM on GPUs, the Ray
        object store otherwise). A collective when the learner is sharded: every rank calls it.

        wait=False (one-step-off, object-store transport): the buckets are put and the engines'
        loads queued, not awaited; an engine loads them, in order, before the rollout queued after
        them, while the learner updates. Returns the queued loads (the caller awaits them)."""
        from .learner_weights import iter_full_weights

        targets = self.remote_samplers if self.sync_samplers is None else self.sync_samplers
        if self._synced_step < 0 and trainer.state.global_step == 0 and self.engines_hold_initial_weights:
            # A fresh run's first sync: the engines loaded the checkpoint the learner starts from
            # (a resumed run is past step 0 here), so nothing needs to travel. Every rank skips alike.
            self.stats.sync_seconds, self.stats.sync_bytes = 0.0, 0
            self._synced_step = 0
            return []
        self._settle()
        named = iter_full_weights(trainer, dtype=self._sync_dtype())
        if not targets:
            for _ in named:  # drive the gathers of a sharded model; rank 0 pushes
                pass
            self._after_sync(trainer)
            return []
        transport = self._transport(targets)
        from .weight_sync import ObjectStoreSync

        if not wait and isinstance(transport, ObjectStoreSync) and self.sync_samplers is None:
            pushed = transport.push(named, wait=False)
        else:  # NCCL is a collective with the engines' workers, a sharded sync one across ranks: in step
            pushed = transport.push(named)
        self.stats.sync_seconds, self.stats.sync_bytes = pushed.seconds, pushed.bytes
        self._after_sync(trainer)
        return list(pushed.queued)

    def _transport(self, targets: Sequence[Any]) -> Any:
        from .weight_sync import make_weight_sync

        if self._weight_sync is None:
            gpu = self.spec.sampler.gpus_per_replica > 0 and _cuda_available()
            shared = gpu and self.spec.sampler.backend == "vllm" and self._engines_on_my_device(targets)
            if shared:
                print(f"sampler engine and learner share GPU {_learner_device_uuid()}: weights go through host memory "
                      "(NCCL refuses two ranks on one device), and the learner has the memory that "
                      f"sampler.gpuMemoryUtilization ({self.spec.sampler.gpu_memory_utilization}) leaves", flush=True)
            self._weight_sync = make_weight_sync(
                targets, backend=self.spec.sampler.backend, timeout=self.sync_timeout, gpu=gpu and not shared)
        return self._weight_sync

    def _settle(self) -> None:
        """Wait (without taking it) for a rollout sampled ahead: a sync outside the rollout (an
        evaluation's) must not reach the engines before it is done (an NCCL broadcast would block
        on engines busy sampling)."""
        if self._pending is not None:
            import ray

            refs = list(self._pending.loads) + [ref for _, ref in self._pending.launched]
            ray.wait(refs, num_returns=len(refs))

    def _engines_on_my_device(self, targets: Sequence[Any]) -> bool:
        """Whether an engine runs on this learner's GPU (a local run on one GPU: Ray gives neither
        actor a device of its own, so both use the first)."""
        import ray

        mine = _learner_device_uuid()
        engines = ray.get([t.device_uuids.remote() for t in targets], timeout=self.sync_timeout)
        return any(mine in uuids for uuids in engines)

    def _after_sync(self, trainer: Any) -> None:
        if self.sync_samplers is not None:
            # sharded: rank 0 pushes to every engine, so no rank samples before that push is done
            import torch.distributed as dist

            dist.barrier()
        self._synced_step = trainer.state.global_step

    def _sync_dtype(self) -> Any:
        # GPU engines run in spec.model.dtype: send that, not the learner's fp32 masters (half the
        # bytes). CPU engines may have fallen back to float32 (no bf16 units): send as is.
        if self.spec.sampler.gpus_per_replica == 0 or not _cuda_available() or self.spec.model.dtype == "auto":
            return None
        from .model_source import torch_dtype

        return torch_dtype(self.spec.model.dtype)

    def _launch(self, prompts: list[Any], params: Any, timed: bool = False) -> list[tuple[int, Any]]:
        """Start sampling `prompts` on the engines: (shard, Ray future) pairs for _collect."""
        from dataclasses import replace

        from .sampling import prompt_seeds

        # each prompt keeps the seed of its place in the whole batch, whichever engine samples it
        n, seeds = len(self.remote_samplers), prompt_seeds(params, len(prompts))
        shards = [(prompts[i::n], replace(params, prompt_seeds=tuple(seeds[i::n]))) for i in range(n)]
        return [(i, (s.generate_timed if timed else s.generate).remote(*shard))
                for i, (s, shard) in enumerate(zip(self.remote_samplers, shards)) if shard[0]]

    def _collect(self, launched: list[tuple[int, Any]], count: int) -> tuple[list[Any], float | None]:
        """The generations of _launch in prompt order, and the engines' own sampling seconds (the
        slowest engine's) when launched timed."""
        import ray

        parts = ray.get([ref for _, ref in launched])
        seconds = None
        if parts and isinstance(parts[0], tuple):  # generate_timed: (generations, seconds)
            seconds = max(sec for _, sec in parts)
            parts = [gens for gens, _ in parts]
        out: list[Any] = [None] * count
        for (i, _), part in zip(launched, parts):  # undo the round-robin split
            out[i::len(self.remote_samplers)] = part
        return out, seconds

    def _generate(self, prompts: list[Any], params: Any) -> list[Any]:
        if self.local_sampler is not None:
            return self.local_sampler.generate(prompts, params)
        return self._collect(self._launch(prompts, params), len(prompts))[0]

    def _params(self, step: int, trainer: Any) -> Any:
        from .sampling import SamplingParams, stream_seed

        a = self.spec.algorithm
        # A stream per (run seed, step, learner rank): data-parallel ranks sample prompts of their
        # own, and with one seed for all of them every rank drew the same random numbers.
        return SamplingParams(n=a.num_generations, temperature=a.temperature, top_p=a.top_p,
                              max_new_tokens=a.max_completion_length,
                              seed=stream_seed(a.seed, step, _process_index(trainer)))

    def _sample_ahead(self, trainer: Any, step: int) -> None:
        """One-step-off: push the learner's weights (theta_step) and start sampling the next
        generation's prompts (which the trainer peeked, grpo_trainer.EmpoGRPOTrainer.get_batch_samples),
        to be taken at step + updatesPerGeneration: at most that many optimizer steps stale."""
        ahead = getattr(trainer, "next_generation_prompts", None)
        trainer.next_generation_prompts = None
        a = self.spec.algorithm
        at = step + a.updates_per_generation
        if not ahead or at >= trainer.state.max_steps:  # the epoch's last generation, or the run's
            return
        unique = _one_per_group(ahead, a.num_generations)
        loads = self.sync(trainer, wait=False) if step != self._synced_step else []
        params = self._params(at, trainer)
        self._pending = _Pending(at, list(ahead), unique, self._launch(unique, params, timed=True),
                                 self._synced_step, loads)

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list]:
        a = self.spec.algorithm
        step = trainer.state.global_step
        self.stats.sync_seconds, self.stats.sync_bytes = 0.0, 0
        start = time.perf_counter()
        pending, self._pending = self._pending, None
        taken = pending is not None and pending.step == step and pending.passed == list(prompts)
        unique = pending.prompts if taken else _one_per_group(prompts, a.num_generations)
        self.stats.batch_digest = hashlib.sha1(json.dumps(unique, sort_keys=True).encode()).hexdigest()[:12]
        engine_seconds = None
        if taken:
            # sampled ahead, by the weights of step pending.version, while the learner updated
            from .weight_sync import _Deadline

            _Deadline(self.sync_timeout, f"{len(self.remote_samplers)} sampler(s)").get(pending.loads)
            generations, engine_seconds = self._collect(pending.launched, len(unique))
            version = pending.version
        else:
            if pending is not None:  # not expected: the trainer's next batch was not the one peeked
                print(f"one-step-off: the rollout sampled ahead for step {pending.step} is not step {step}'s batch; "
                      "sampling this one now", flush=True)
            if self.remote_samplers and step != self._synced_step:
                self.sync(trainer)
                start = time.perf_counter()
            generations = self._generate(unique, self._params(step, trainer))
            version = self._synced_step if self.remote_samplers else step
        self.stats.wait_seconds = time.perf_counter() - start
        rows = None
        params = self._params(step, trainer)
        if self.refill is not None:
            # Replaced groups train on their own prompt ids; their question and gold answer reach
            # the reward as columns, overriding those of the prompt TRL passed in.
            refilled = self.refill(unique, generations, self._generate, params, step, self.stats.batch_digest)
            generations = [c.generation for c in refilled.batch]
            rows = [c.example for c in refilled.batch]
            self.stats.resampled_fraction = refilled.replaced / len(unique)
        self.stats.generation_seconds = time.perf_counter() - start if engine_seconds is None else engine_seconds
        self.stats.tokens = sum(g.num_tokens for g in generations)
        if self.remote_samplers:
            self.stats.policy_version, self.stats.staleness = version, step - version
        if self.one_step_off:  # after any refill: its samples come from the same weights as the batch's
            self._sample_ahead(trainer, step)
        # Extra keys reach the reward functions as columns: `finished` tells the reward which
        # completions were cut at the token limit.
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "finished": []}
        if rows is not None:
            out.update(question=[], answer=[])
        for i, g in enumerate(generations):
            for ids, logprobs, finished in zip(g.completion_ids, g.logprobs, g.finished):
                out["prompt_ids"].append(g.prompt_ids)
                out["completion_ids"].append(ids)
                out["logprobs"].append(logprobs)
                out["finished"].append(finished)
                if rows is not None:
                    out["question"].append(rows[i]["question"])
                    out["answer"].append(rows[i]["answer"])
        return out
