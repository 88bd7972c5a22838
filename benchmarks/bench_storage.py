"""Checkpoint upload/download throughput to a local SeaweedFS: boto3's transfer manager (multipart,
parallel) against one stream (max_concurrency=1, no multipart) and against a plain local file copy
(what this machine's disk allows).

    python benchmarks/bench_storage.py               # 1 GiB checkpoint in 4 files
    python benchmarks/bench_storage.py --size-mb 64  # quick run

Prints the figures and writes benchmarks/results/storage.json. Starts and stops its own SeaweedFS
(by PID) and deletes everything it wrote. The client, the server and the disk share this machine,
so the S3 figures are a floor for a real network store, not a ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.plugins.seaweedfs (the server launcher the tests use)

from empo_api.models import StorageSpec  # noqa: E402
from empo_trainer.storage import S3Options, open_run_storage  # noqa: E402
from tests.plugins.seaweedfs import start_seaweedfs  # noqa: E402

MiB = 2**20
RESULTS = REPO / "benchmarks" / "results" / "storage.json"


def make_checkpoint(folder: Path, size_mb: int, files: int) -> list[Path]:
    """`files` files totalling `size_mb` MiB of incompressible bytes (the store must not shrink them)."""
    folder.mkdir(parents=True)
    block = os.urandom(16 * MiB)
    per_file = size_mb * MiB // files
    paths = []
    for i in range(files):
        path = folder / f"model-{i + 1:05d}-of-{files:05d}.safetensors"
        with open(path, "wb") as f:
            left = per_file
            while left:
                n = min(left, len(block))
                f.write(i.to_bytes(4, "little") + block[4:n])  # distinct files
                left -= n
        paths.append(path)
    return paths


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def local_copy(paths: list[Path], dest: Path) -> None:
    dest.mkdir()
    for p in paths:
        shutil.copyfile(p, dest / p.name)
        with open(dest / p.name, "rb+") as f:
            os.fsync(f.fileno())  # to disk, as the store has to


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="checkpoint size in MiB (default 1024)")
    parser.add_argument("--files", type=int, default=4, help="files in the checkpoint (default 4)")
    parser.add_argument("--concurrency", type=int, default=S3Options().max_concurrency, help="transfer manager threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    size = args.size_mb * MiB // args.files * args.files

    load_before = os.getloadavg()[0]
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    with tempfile.TemporaryDirectory(prefix="empo-bench-storage-") as tmp:
        work = Path(tmp)
        paths = make_checkpoint(work / "ckpt", args.size_mb, args.files)
        pairs = [(f"bench/{p.name}", p) for p in paths]
        figures: dict[str, float] = {}

        seconds = timed(lambda: local_copy(paths, work / "copy"))
        figures["local_copy_MBps"] = size / seconds / 1e6
        shutil.rmtree(work / "copy")

        with start_seaweedfs(work / "weed") as server:
            os.environ.update(server.env())
            bucket = server.new_bucket("bench")
            spec = StorageSpec(uri=f"s3://{bucket}/runs", endpoint=server.endpoint)
            parallel = S3Options(max_concurrency=args.concurrency)
            single = S3Options(max_concurrency=1, multipart_threshold=size + 1, multipart_chunksize=size + 1)
            for label, options in (("transfer_manager", parallel), ("single_stream", single)):
                run = open_run_storage(spec, "bench", label, options=options)
                seconds = timed(lambda: run.backend.upload_files(pairs))
                figures[f"{label}_upload_MBps"] = size / seconds / 1e6
                down = work / f"down-{label}"
                seconds = timed(lambda: run.backend.download_files([(k, down / p.name) for k, p in pairs]))
                figures[f"{label}_download_MBps"] = size / seconds / 1e6
                shutil.rmtree(down)
                run.backend.delete([k for k, _ in pairs])

            # The whole protocol as the trainer uses it: sha256 of every file, upload, manifest, LATEST;
            # then download with sha256 verification.
            run = open_run_storage(spec, "bench", "commit", options=parallel)
            seconds = timed(lambda: run.checkpoints.commit(1, work / "ckpt"))
            figures["commit_MBps"] = size / seconds / 1e6
            ref = run.checkpoints.latest()
            seconds = timed(lambda: run.checkpoints.download(ref, work / "restore"))
            figures["verified_download_MBps"] = size / seconds / 1e6
            shutil.rmtree(work / "restore")
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

    ratios = {
        "upload_transfer_manager_vs_single_stream": figures["transfer_manager_upload_MBps"] / figures["single_stream_upload_MBps"],
        "download_transfer_manager_vs_single_stream": figures["transfer_manager_download_MBps"] / figures["single_stream_download_MBps"],
        "upload_transfer_manager_vs_local_copy": figures["transfer_manager_upload_MBps"] / figures["local_copy_MBps"],
        "download_transfer_manager_vs_local_copy": figures["transfer_manager_download_MBps"] / figures["local_copy_MBps"],
    }
    result = {
        "benchmark": "storage",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_1m_at_start": round(load_before, 2)},
        "note": "client, SeaweedFS and disk share this machine; SigV4 over http signs every payload byte, "
                "so uploads are CPU-bound here and parallelism cannot help as it does against a networked store",
        "checkpoint": {"size_MiB": size / MiB, "files": args.files},
        "transfer_manager": {"max_concurrency": args.concurrency, "multipart_chunksize_MiB": S3Options().multipart_chunksize / MiB},
        "MBps": {k: round(v, 1) for k, v in figures.items()},
        "ratios": {k: round(v, 2) for k, v in ratios.items()},
    }
    for key, value in result["MBps"].items():
        print(f"{key:32s} {value:10.1f} MB/s")
    for key, value in result["ratios"].items():
        print(f"{key:48s} {value:6.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
