"""The Ray actors of a run: samplers (generation) and learners (TRL GRPOTrainer).

Plain classes; the driver wraps them with `ray.remote` and places them by the placement plan.
Each actor receives what the driver already parsed (the validated spec, the run's storage root,
the prompts) and parses none of it again; the same code runs on a laptop and on KubeRay pods.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from empo_api.models import EmpoRunSpec

from . import lifeline

if TYPE_CHECKING:
    from .storage.layout import StorageLocation


def _quiet() -> None:
    # Actor output is forwarded to the driver's terminal; per-file progress bars drown the run's own.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # Deprecation notices of pinned libraries (transformers 5 renames) say nothing about the run.
    warnings.filterwarnings("ignore", category=FutureWarning)
    # TRL checks vLLM's version for its own vLLM integration, which we do not use (rollout_func).
    warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions", category=UserWarning)


def _threads(num_threads: int | None) -> None:
    # Ray pins OMP_NUM_THREADS to the actor's CPU reservation; on a laptop sampling and learning
    # alternate, so each phase may use every core.
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)


class SamplerActor:
    def __init__(self, spec: EmpoRunSpec, num_threads: int | None = None):
        from . import model_source
        from .sampling import make_sampler

        _threads(num_threads)
        _quiet()
        lifeline.watch()  # a local run's actors end with its driver
        self.spec = spec
        path = model_source.resolve(self.spec.model.source, self.spec.model.revision)
        self.sampler = make_sampler(self.spec, path)

    def generate(self, prompts, params):
        return self.sampler.generate(prompts, params)

    def generate_timed(self, prompts, params):
        """(generations, seconds the engine spent on them): a rollout sampled ahead is timed here,
        not by the learner, which was updating meanwhile."""
        import time

        start = time.perf_counter()
        out = self.sampler.generate(prompts, params)
        return out, time.perf_counter() - start

    # weight sync (weight_sync.py): object-store buckets, or NCCL broadcasts into the vLLM workers
    def load_weights(self, named: Any) -> bool:
        self.sampler.load_weights(named)
        return True

    def weights_loaded(self) -> bool:
        self.sampler.weights_loaded()
        return True

    def device_uuids(self) -> list[str]:
        """The GPUs this actor's engine runs on (vLLM takes the first tensorParallelSize visible ones)."""
        import torch

        if not torch.cuda.is_available():
            return []
        count = min(torch.cuda.device_count(), getattr(self.sampler, "workers", 1))
        return [str(torch.cuda.get_device_properties(i).uuid) for i in range(count)]

    def engine_workers(self) -> int:
        return getattr(self.sampler, "workers", 1)

    def init_weight_group(self, host: str, port: int, rank_offset: int, world_size: int) -> list[int]:
        return self.sampler.init_weight_group(host, port, rank_offset, world_size)

    def receive_bucket(self, metas: list) -> bool:
        self.sampler.receive_bucket(metas)
        return True

    def ready(self) -> bool:
        return True


class LearnerActor:
    """Runs GRPOTrainer; streams events to `events` (a Ray queue) and commits checkpoints."""

    def __init__(self, spec: EmpoRunSpec, storage_root: StorageLocation, namespace: str, name: str,
                 examples: list[dict[str, Any]], work_dir: str, events: Any = None,
                 samplers: list[Any] | None = None, num_threads: int | None = None, rank: int = 0,
                 world_size: int = 1):
        _threads(num_threads)
        _quiet()
        lifeline.watch()
        self.spec = spec
        self.storage_root = storage_root  # the driver's parse of storage.uri (storage.run_root)
        self.namespace, self.name = namespace, name
        self.examples = examples
        self.work_dir = Path(work_dir)
        self.events = events
        self.rank, self.world_size = rank, world_size
        # Each learner feeds from its own share of the sampler engines and syncs only those.
        self.samplers = list(samplers or [])[rank::world_size]
        self.all_samplers = list(samplers or [])
        self.trainer = None

    def rendezvous_address(self) -> str:
        """host:port where rank 0 will listen for torch.distributed (called on rank 0 only)."""
        import socket

        import ray

        host = ray.util.get_node_ip_address()
        with socket.socket() as sock:
            sock.bind((host, 0))
            return f"{host}:{sock.getsockname()[1]}"

    def device_info(self) -> tuple[str, list[str]]:
        """(node, GPU ids Ray gave this actor): the driver lays out local ranks per node from these."""
        import ray

        return ray.util.get_node_ip_address(), [str(g) for g in ray.get_gpu_ids()]

    def join(self, address: str, visible: str | None = None, local_rank: int | None = None,
             local_world_size: int | None = None) -> bool:
        # accelerate (under HF Trainer) initialises torch.distributed from these variables: gloo on
        # CPU, NCCL on GPUs; one process per GPU, LOCAL_RANK picking this rank's GPU on its node.
        if local_rank is None:  # one learner process per node
            visible, local_rank, local_world_size = "", 0, 1
        from .distributed import rank_environment

        os.environ.update(rank_environment(address, self.rank, self.world_size, visible or "", local_rank,
                                           local_world_size or 1))
        return True

    def _emit(self, event: dict[str, Any]) -> None:
        # Rank 0 speaks for the run: every rank holds the same weights after each all-reduce.
        if self.events is not None and self.rank == 0:
            self.events.put(event)

    def _storage(self):
        from .storage import open_run_root

        return open_run_root(self.storage_root, self.spec.storage)

    def _resume_dir(self, storage, fresh: bool) -> str | None:
        ref = None if fresh else storage.checkpoints.latest()
        if ref is None:
            return None
        self.resumed_step = ref.step
        dest = self.work_dir / "resume" / f"step-{ref.step:06d}"
        storage.checkpoints.download(ref, dest)
        self._emit({"type": "resumed", "step": ref.step, "uri": storage.checkpoints.uri_of(ref.step)})
        return str(dest)

    def _follower(self, engine) -> Callable[[int], None]:
        """What ranks other than 0 do when rank 0 evaluates: take part in its weight sync when the
        model is sharded (the gather is a collective); otherwise nothing."""
        def follow(step: int) -> None:
            if self.spec.eval.benchmarks and engine.local_sampler is None and engine.sync_samplers is not None:
                engine.sync(self.trainer)

        return follow

    def _evaluator(self, storage, engine) -> Callable[[int], dict | None]:
        spec = self.spec

        def evaluate(step: int) -> dict | None:
            if not spec.eval.benchmarks:
                return None
            from .evaluation import evaluate as run_eval

            if engine.local_sampler is not None:
                sampler = engine.local_sampler
            else:  # evaluate the newest weights: sync first
                engine.sync(self.trainer)
                sampler = _RemoteSampler(self.samplers[0])
            from .evaluation.grading import default_matcher

            # Grade answers the way training extracts them, so a run is judged on what it learned.
            matcher = default_matcher(spec.algorithm.clustering.symbolic_timeout_seconds, spec.algorithm.answer_fallbacks)
            report = run_eval(sampler, spec.eval.benchmarks, spec.eval, spec.prompt, progress=False, matcher=matcher)
            storage.write_json(f"eval/step-{step:06d}.json", report.to_json(step=step))
            return report.to_status(step)

        return evaluate

    def _finish_without_training(self, storage, checkpoint: str, step: int) -> dict[str, Any]:
        """LATEST is already at the step limit (the attempt that got there died before it ended):
        train nothing, and run only the final evaluation if that attempt did not write it."""
        from types import SimpleNamespace

        from . import model_source
        from .rollout_engine import RolloutEngine

        final_eval = None
        wanted = self.rank == 0 and self.spec.eval.at_end and self.spec.eval.benchmarks
        if wanted and not storage.exists(f"eval/step-{step:06d}.json"):
            path = model_source.resolve(self.spec.model.source, self.spec.model.revision)
            tokenizer = model_source.load_tokenizer(path, self.spec.model.revision, self.spec.model.trust_remote_code)
            model = model_source.load_causal_lm(checkpoint, self.spec.model.dtype)
            self.trainer = SimpleNamespace(model=model, state=SimpleNamespace(global_step=step))
            engine = RolloutEngine(self.spec, remote_samplers=self.samplers)
            if not self.samplers:
                from .sampling.transformers_backend import TransformersSampler

                engine.local_sampler = TransformersSampler.from_model(model, tokenizer, self.spec.algorithm.max_prompt_length)
            final_eval = self._evaluator(storage, engine)(step)
            if final_eval:
                self._emit({"type": "eval", "step": step, "result": final_eval})
        return {"step": step, "resumed_from": checkpoint, "final_eval": final_eval}

    def _stop_check(self, control: Any) -> Callable[[], bool]:
        """Whether this attempt was asked to stop: the driver's request (SIGTERM on the head) through
        the `control` queue, or the preemption request file on this learner's own pod (its preStop
        hook, `python -m empo_trainer preempt --worker`, when only this pod is drained)."""
        import time as _time

        from . import preemption

        since = _time.time()

        def requested() -> bool:
            if control is not None and not control.empty():
                return True
            return preemption.requested_since(since)

        return requested

    def train(self, max_steps: int, fresh: bool = False, attempt: int | None = None,
              control: Any = None) -> dict[str, Any]:
        from datasets import Dataset
        from trl import GRPOConfig

        from . import model_source
        from .grpo_trainer import trainer_class
        from .rollout_engine import RolloutEngine
        from .grpo_settings import grpo_config_kwargs
        from .trainer_callback import make_callback
        from .rewards import build_reward_function

        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        storage = self._storage()
        storage.fence_to(attempt)  # the driver's claim: a newer attempt stops this one's writes
        stop_requested = self._stop_check(control)
        resume = self._resume_dir(storage, fresh)
        if resume is not None and self.resumed_step >= max_steps:  # one step past the limit, otherwise
            return self._finish_without_training(storage, resume, self.resumed_step)
        path = model_source.resolve(self.spec.model.source, self.spec.model.revision)
        tokenizer = model_source.load_tokenizer(path, self.spec.model.revision, self.spec.model.trust_remote_code)
        # fp32 master weights whatever spec.model.dtype (the samplers' dtype): learner.precision is
        # the compute dtype, and a bf16 copy would round away most updates at lr 1e-6
        model = model_source.load_causal_lm(path, "float32", self.spec.model.revision,
                                            self.spec.model.trust_remote_code)
        import torch

        from .distributed import learner_uses_cpu, prepare, visible_devices

        use_cpu = learner_uses_cpu(self.spec, torch.cuda.device_count(), visible_devices())
        out_dir = self.work_dir / "trainer"
        if fresh and out_dir.exists():
            shutil.rmtree(out_dir)
        config = GRPOConfig(**grpo_config_kwargs(self.spec, str(out_dir), max_steps=max_steps, use_cpu=use_cpu))
        reward_fn = build_reward_function(self.spec)
        engine = RolloutEngine(self.spec, remote_samplers=self.samplers)
        if config.fsdp:  # gathering sharded weights is a collective; rank 0 receives and pushes them all
            engine.sync_samplers = self.all_samplers if self.rank == 0 else ()
        if self.spec.algorithm.filtered_groups == "resample":
            from .dynamic_sampling import GroupRefill

            engine.refill = GroupRefill(self.spec, self.examples, reward_fn.engine)
        trainer = trainer_class()(
            model=model, reward_funcs=[reward_fn], args=config, train_dataset=Dataset.from_list(self.examples),
            processing_class=tokenizer, rollout_func=engine, advantage_epsilon=self.spec.algorithm.advantage_epsilon,
            sampler_correction=bool(self.samplers),  # separate engines: correct for their log-prob mismatch
        )
        # one-step-off (sampler.maxStaleness): the trainer peeks the next generation's prompts so the
        # engines can sample them while it updates on this one
        trainer.lookahead = engine.one_step_off
        self.trainer = trainer
        prepare(trainer)  # FSDP plugin details accelerate leaves out (CPU, fp32 gradient reduction)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # the driver shows progress; raw log dicts are noise
        if not self.samplers:
            from .sampling.transformers_backend import TransformersSampler

            engine.local_sampler = TransformersSampler.from_model(
                trainer.model, tokenizer, self.spec.algorithm.max_prompt_length)
        evaluator = self._evaluator(storage, engine)
        lead = self.rank == 0
        commit = storage.checkpoints.commit if lead else (lambda step, folder: "")

        def emit(event: dict[str, Any]) -> None:
            # metrics.jsonl is written here, before the step's checkpoint can commit, so a run
            # killed right after a commit never loses the lines up to LATEST (the driver only
            # drains the queue every half second).
            if lead and event["type"] == "step":
                event["record"]["total_steps"] = max_steps
                storage.append_metrics(event["record"])
            self._emit(event)

        if lead:  # TensorBoard / MLflow / W&B (spec.tracking) through transformers' own callbacks
            from . import tracking

            for callback in tracking.callbacks(self.spec, self.namespace, self.name, engine, storage, self.work_dir):
                trainer.add_callback(callback)
        callback = make_callback(emit, reward_fn, engine, commit, evaluator if lead else self._follower(engine),
                                 self.spec.eval.every, should_stop=stop_requested)
        trainer.add_callback(callback)
        from .preemption import agree

        # a request that came while this attempt loaded: nothing new to checkpoint (all ranks agree,
        # or one would wait alone in the first step's collective)
        if agree(stop_requested(), config.device):
            step = self.resumed_step if resume is not None else 0
            return {"step": step, "resumed_from": resume, "final_eval": None, "preempted": True}
        trainer.train(resume_from_checkpoint=resume)
        step = trainer.state.global_step
        if callback.stopped_at is not None:  # preempted: the step's checkpoint is committed (on_save)
            # no final eval: the next attempt runs it (_finish_without_training) if this was the last step
            return {"step": step, "resumed_from": resume, "final_eval": None, "preempted": True}
        final_eval = None
        if lead and self.spec.eval.at_end and self.spec.eval.benchmarks:
            final_eval = evaluator(step)
            if final_eval:
                self._emit({"type": "eval", "step": step, "result": final_eval})
        elif self.spec.eval.at_end:
            self._follower(engine)(step)
        return {"step": step, "resumed_from": resume, "final_eval": final_eval}


class _RemoteSampler:
    """A sampler actor seen through the local Sampler interface (for evaluation)."""

    def __init__(self, handle: Any):
        self.handle = handle

    def generate(self, prompts, params):
        import ray

        return ray.get(self.handle.generate.remote(prompts, params))

    def load_weights(self, state_dict):
        import ray

        ray.get(self.handle.load_weights.remote(state_dict))
