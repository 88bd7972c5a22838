import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.scrape import free_port, scrape

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def empo_env(tmp_path_factory):
    """Environment for `empo` subprocesses: offline, the shared model cache, and a throwaway HOME
    so a test can tell that nothing (a Ray auth token, say) was written into the user's home."""
    home = tmp_path_factory.mktemp("home")
    env = dict(os.environ)
    env.update(HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0",
               EMPO_CACHE_DIR=os.environ.get("EMPO_CACHE_DIR", str(REPO / ".cache" / "empo")),
               PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    return env


def empo(args, env, **kwargs):
    return subprocess.run([sys.executable, "-m", "empo_cli", *map(str, args)], env=env, cwd=REPO,
                          capture_output=True, text=True, **kwargs)


def tiny_manifest(folder: Path, **spec_updates) -> Path:
    """examples/tiny.yaml on the repository's arithmetic set, `spec_updates` set over its spec."""
    doc = yaml.safe_load((REPO / "examples/tiny.yaml").read_text())
    doc["spec"]["dataset"]["uri"] = str(REPO / "data/local/arith-train.jsonl")
    doc["spec"].update(spec_updates)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


FINISHED_STEPS = 4


@dataclass(frozen=True)
class FinishedRun:
    spec: Path  # examples/tiny.yaml as tiny_manifest writes it
    out: Path  # the --output folder; copy it before training into it again
    folder: Path  # where `spec` and `out` live
    result: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory, empo_env) -> FinishedRun:
    """One finished `empo train` of the tiny run (FINISHED_STEPS steps, local storage), for every test
    that reads a finished run, compares with one, or starts from one: each of those trained its own
    identical run before, an attempt (Ray, the model, TRL) of about a minute each."""
    folder = tmp_path_factory.mktemp("finished")
    spec, out = tiny_manifest(folder), folder / "out"
    result = empo(["train", spec, "--output", out, "--steps", FINISHED_STEPS, "--no-progress"], empo_env, timeout=900)
    return FinishedRun(spec, out, folder, result)


def lifeline_processes(driver_pid: int) -> list[int]:
    """Live processes started under the driver's lifeline (its local Ray: GCS, raylet, workers)."""
    from empo_trainer import lifeline

    needle = f"{lifeline.ENV}={driver_pid}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == driver_pid:
            continue
        try:
            if needle in (entry / "environ").read_bytes() and lifeline.alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True)
class KilledRun:
    out: Path  # the --output folder of the killed run and of its resume
    step: int  # LATEST's step once every process of the killed attempt was gone
    workers: list[int]  # the processes under the driver's lifeline just before the kill
    actors_left: list[str]  # learner and sampler processes that outlived the driver by 5 s
    left: list[str]  # processes of its local Ray that outlived the driver by 180 s
    resumed: subprocess.CompletedProcess  # the same command, run again once they were gone


@pytest.fixture(scope="session")
def driver_killed_at_a_checkpoint(tmp_path_factory, empo_env, finished_tiny_run) -> KilledRun:
    """finished_tiny_run's command into a new folder, its driver alone (not its process group) killed
    -9 once step 2 is committed; once every process of its local Ray is gone, the same command run
    again to the end. Shared by the test that the actors end with their driver and the test that the
    resume continues at the same step with the same data order: each killed and resumed a run of
    its own before, two attempts of about a minute each."""
    from tests.waiting import wait_for

    folder = tmp_path_factory.mktemp("killed")
    out, log = folder / "out", folder / "killed.log"
    latest = out / "default/tiny-smoke/checkpoints/LATEST"
    with open(log, "wb") as f:  # a file, not a pipe: nothing the killed attempt leaves behind blocks on it
        proc = subprocess.Popen([sys.executable, "-m", "empo_cli", "train", str(finished_tiny_run.spec),
                                 "--output", str(out), "--steps", str(FINISHED_STEPS), "--no-progress"], env=empo_env,
                                cwd=REPO, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

    def committed():
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early: {log.read_text(errors='replace')[-3000:]}")
        return latest.exists() and json.loads(latest.read_text())["step"] >= 2

    def still_running(only_actors: bool) -> list[str]:
        return [cmdline(p)[:100] for p in lifeline_processes(proc.pid) if not only_actors or "Actor." in cmdline(p)]

    def gone_within(seconds: float, only_actors: bool) -> list[str]:
        """[] once no such process is left, or those still running after `seconds`."""
        try:
            wait_for(lambda: not still_running(only_actors), seconds, 0.1)
            return []
        except AssertionError:
            return still_running(only_actors)

    try:
        wait_for(committed, 600, 0.2, "a checkpoint at step 2")  # tiny.yaml checkpoints every 2 steps
        workers = lifeline_processes(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, not its process group
        proc.wait()
        # the actors that write (learner, samplers) at once; Ray's own helpers once they see it
        actors_left = gone_within(5, only_actors=True)
        left = gone_within(180, only_actors=False)
    finally:
        for pid in lifeline_processes(proc.pid):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    step = json.loads(latest.read_text())["step"]
    resumed = empo(["train", finished_tiny_run.spec, "--output", out, "--steps", FINISHED_STEPS, "--no-progress"],
                   empo_env, timeout=900)
    return KilledRun(out, step, workers, actors_left, left, resumed)


@dataclass(frozen=True)
class EntrypointRun:
    configmap: dict  # the ConfigMap the operator built for the run
    storage_uri: str  # the operator's default storage, which the run got
    source: str  # the model's s3:// folder
    cache: Path  # the run's EMPO_CACHE_DIR
    result: subprocess.CompletedProcess  # `python -m empo_trainer run --config ... --steps 1`


@pytest.fixture(scope="session")
def entrypoint_run(tmp_path_factory, empo_env, s3_server) -> EntrypointRun:
    """The RayJob entrypoint as the head pod runs it, one step: the ConfigMap the operator builds for
    the tiny run in namespace 'research' (storage: the operator's S3 default; the model: a folder in
    S3, which the driver stages into the run's storage and the actors load, verified, from the
    copy; TensorBoard on, its event files copied into S3). test_cluster_entrypoint and
    test_model_staging read it; each ran an entrypoint of its own before, about a minute each."""
    from empo_api.models import EmpoRun
    from empo_operator.builders import CONFIG_KEY, build_configmap
    from empo_operator.defaults import defaulted
    from empo_operator.settings import Settings
    from empo_trainer import model_source

    folder = tmp_path_factory.mktemp("entrypoint")
    tiny = Path(model_source.resolve(model_source.BUNDLED_TINY))
    models, client = s3_server.new_bucket(), s3_server.client()
    for f in sorted(p for p in tiny.iterdir() if p.is_file()):
        client.upload_file(str(f), models, f"models/tiny/{f.name}")
    source = f"s3://{models}/models/tiny"

    doc = yaml.safe_load((REPO / "examples/tiny.yaml").read_text())
    doc["metadata"]["namespace"] = "research"
    doc["spec"]["model"]["source"] = source
    doc["spec"]["dataset"]["uri"] = str(REPO / "data/local/arith-train.jsonl")
    # On a cluster the operator refuses pod-local storage: the run's storage is its S3 default.
    del doc["spec"]["storage"]["uri"]
    doc["spec"]["eval"]["benchmarks"] = []
    doc["spec"]["tracking"] = {"tensorboard": True}  # event files written locally, copied into S3
    settings = Settings(default_storage_uri=f"s3://{s3_server.new_bucket()}/runs", s3_endpoint=s3_server.endpoint)
    configmap = build_configmap(defaulted(EmpoRun.model_validate(doc), settings))
    config = folder / CONFIG_KEY
    config.write_text(configmap["data"][CONFIG_KEY])

    env = empo_env | s3_server.env() | {
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_ENDPOINT_URL": s3_server.endpoint,  # the model's bucket
        "EMPO_RUN_NAME": "tiny-smoke", "EMPO_RUN_NAMESPACE": "research", "EMPO_CACHE_DIR": str(folder / "cache")}
    result = subprocess.run([sys.executable, "-m", "empo_trainer", "run", "--config", str(config), "--steps", "1"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    return EntrypointRun(configmap, settings.default_storage_uri, source, folder / "cache", result)


REPORTING_NAMESPACE, REPORTING_STEPS = "trainer-status", 3


@dataclass(frozen=True)
class ReportingRun:
    run: Path  # the run's folder (--output/<namespace>/tiny-smoke)
    mlruns: Path  # the MLflow file store it logged to
    scraped: dict  # /metrics as served once a step was trained
    output: str  # stdout and stderr
    returncode: int
    status: dict  # the EmpoRun's status in the API emulator after the run


@pytest.fixture(scope="session")
def reporting_run(tmp_path_factory, empo_env, kube_emulator) -> ReportingRun:
    """One `empo train` of the tiny run (REPORTING_STEPS steps) that reports everywhere a run reports:
    TensorBoard, an MLflow file store and W&B offline (spec.tracking), Prometheus /metrics while it
    trains, and its EmpoRun's status through the Kubernetes API (the KMock emulator, as from a RayJob
    head pod). test_tracking and test_status_reporting read it; each trained a run of its own before."""
    from empo_operator.kube import Kube
    from tests.waiting import wait_for

    folder = tmp_path_factory.mktemp("reporting")
    kube_emulator.add_namespace(REPORTING_NAMESPACE)
    doc = yaml.safe_load((REPO / "examples/tiny.yaml").read_text())
    doc["metadata"]["namespace"] = REPORTING_NAMESPACE
    doc["spec"]["dataset"]["uri"] = str(REPO / "data/local/arith-train.jsonl")
    doc["spec"]["eval"] = {"benchmarks": []}
    doc["spec"]["tracking"] = {"tensorboard": True, "mlflow": {"trackingUri": str(folder / "mlruns"), "experiment": "tiny"},
                               "wandb": {"project": "empo-tests", "mode": "offline"}}
    kube = Kube(kube_emulator.client())
    kube.create(doc)
    (folder / "run.yaml").write_text(yaml.safe_dump(doc))
    port = free_port()
    env = empo_env | {"EMPO_METRICS_PORT": str(port), "EMPO_METRICS_ADDR": "127.0.0.1",
                      "EMPO_RUN_NAME": "tiny-smoke", "EMPO_RUN_NAMESPACE": REPORTING_NAMESPACE,
                      "EMPO_API_URL": kube_emulator.url, "EMPO_PROGRESS_INTERVAL": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "empo_cli", "train", str(folder / "run.yaml"), "--output",
                             str(folder / "out"), "--steps", str(REPORTING_STEPS), "--no-progress"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    labels = (("namespace", REPORTING_NAMESPACE), ("run", "tiny-smoke"))

    def trained_a_step():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before a scrape saw a step: {proc.stdout.read()[-3000:]}")
        try:
            return scrape(port).get("empo_train_step", {}).get(labels, 0) >= 1
        except OSError:
            return False

    try:
        wait_for(trained_a_step, 600, 0.5, "empo_train_step >= 1 on the driver's /metrics")
        scraped = scrape(port)
        output, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    status = kube.get("empo.dev/v1alpha1", "emporuns", REPORTING_NAMESPACE, "tiny-smoke").get("status", {})
    return ReportingRun(folder / "out" / REPORTING_NAMESPACE / "tiny-smoke", folder / "mlruns", scraped, output,
                        proc.returncode, status)
