"""Device check: the real vLLM sampler on GPUs, the weight sync, log-prob agreement, and timings.

Run on a GPU machine with the trainer image's environment (CUDA vllm 0.32.0); under 8 minutes:

    python benchmarks/gpu_check_vllm.py [--model bundled:smollm2-135m-instruct] [--dtype float32]

1. starts a SamplerActor (vLLM engine, sampler.backend vllm) on GPU 0 through Ray;
2. loads the learner on the last GPU, changes its weights (a stand-in for optimizer steps);
3. syncs: NCCL broadcast (NcclSync) when there are 2+ GPUs (NCCL refuses two ranks on one GPU),
   and the object-store path (ObjectStoreSync) in every case; times each, per GiB;
4. samples from the engine and checks that its processed log-probs equal the learner's
   recomputed ones (max |diff| <= --atol), i.e. the sync moved the right weights;
5. prints one JSON line and writes benchmarks/results/gpu_check_vllm.json.
Exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
CHAT = [{"role": "user", "content": "What is 12 + 30? Answer with just the number."}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--dtype", default="float32", help="engine and learner dtype for the agreement check")
    parser.add_argument("--atol", type=float, default=5e-3)
    args = parser.parse_args()

    import ray
    import torch

    from empo_api.models import EmpoRunSpec
    from empo_trainer import model_source
    from empo_trainer.actors import SamplerActor
    from empo_trainer.learner_weights import iter_full_weights
    from empo_trainer.sampling import SamplingParams
    from empo_trainer.sampling.chat import render_prompt_ids
    from empo_trainer.weight_sync import NcclSync, ObjectStoreSync

    gpus = torch.cuda.device_count()
    if not gpus:
        print("no GPU here", file=sys.stderr)
        return 2
    started = time.perf_counter()
    spec = EmpoRunSpec.model_validate({
        "model": {"source": args.model, "dtype": args.dtype}, "dataset": {"uri": "unused.jsonl"},
        "algorithm": {"maxPromptLength": 128, "maxCompletionLength": 32},
        "sampler": {"backend": "vllm", "replicas": 1, "gpusPerReplica": 1, "gpuMemoryUtilization": 0.3},
    })
    path = model_source.resolve(spec.model.source)
    ray.init(num_gpus=gpus, include_dashboard=False, configure_logging=False)
    actor = ray.remote(num_gpus=1)(SamplerActor).remote(spec)
    ray.get(actor.ready.remote())
    engine_start = time.perf_counter() - started

    learner_device = torch.device("cuda", gpus - 1)  # the last GPU: not the engine's when there are two
    learner = model_source.load_causal_lm(path, args.dtype).to(learner_device)
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    trainer = SimpleNamespace(model=learner)
    tokenizer = model_source.load_tokenizer(path)
    prompt = render_prompt_ids(tokenizer, CHAT)

    def agreement() -> float:
        gen = ray.get(actor.generate.remote([CHAT], SamplingParams(n=4, temperature=0.9, max_new_tokens=32, seed=1)))[0]
        worst = 0.0
        for ids, lps in zip(gen.completion_ids, gen.logprobs):
            x = torch.tensor([prompt + ids], device=learner_device)
            with torch.no_grad():
                logits = learner(x).logits[0, len(prompt) - 1:-1].float() / 0.9
            ref = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids, device=learner_device)[:, None])[:, 0]
            worst = max(worst, (ref.cpu() - torch.tensor(lps)).abs().max().item())
        return worst

    report = {"gpus": gpus, "device": torch.cuda.get_device_name(0), "model": args.model, "dtype": args.dtype,
              "engine_start_seconds": round(engine_start, 1), "stale_max_abs_logprob_diff": round(agreement(), 4)}
    syncs = [("object_store", ObjectStoreSync([actor]))]
    if gpus >= 2:
        syncs.insert(0, ("nccl", NcclSync([actor], device=learner_device)))
    else:
        report["nccl"] = "skipped: one GPU (NCCL needs the learner and the engine on different GPUs)"
    ok = True
    for name, sync in syncs:
        with torch.no_grad():  # new weights before each transport, so each one must move them
            for p in learner.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        sync.push(iter_full_weights(trainer))  # first push: NCCL group set-up, allocator warm-up
        stats = sync.push(iter_full_weights(trainer))
        diff = agreement()
        ok &= diff <= args.atol
        report[name] = {"gib": round(stats.bytes / 2**30, 3), "seconds": round(stats.seconds, 3),
                        "seconds_per_gib": round(stats.seconds_per_gib, 3), "max_abs_logprob_diff": round(diff, 5),
                        "agrees": diff <= args.atol}
    report["ok"] = bool(ok and report["stale_max_abs_logprob_diff"] > args.atol)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report), flush=True)
    (REPO / "benchmarks/results").mkdir(exist_ok=True)
    (REPO / "benchmarks/results/gpu_check_vllm.json").write_text(json.dumps(report, indent=2) + "\n")
    ray.shutdown()
    return 0 if report["ok"] else 1


if __name__ == "__main__":  # vLLM's engine core starts in a spawned process
    sys.exit(main())
