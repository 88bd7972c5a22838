"""The attempt claim is atomic: claimers that start at the same instant, as threads and as processes,
each get an attempt of their own, on every backend (a local folder, SeaweedFS, moto's S3), and only
the newest of them passes the fence.

Before the claim was exclusive (list attempts, then PUT N+1), an audit saw two processes get the same
attempt in 13 of 20 rounds locally and 9 of 20 on S3; this race, run on that code, had double claims
in 20 of 20 rounds on every backend, threads and processes alike (pytest -s prints the counts). It
must count 0. EMPO_CLAIM_ROUNDS=100 runs longer races.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time

import pytest

from empo_api.models import StorageSpec
from empo_trainer.storage import S3Options, StorageError, SupersededError, open_run_storage
from empo_trainer.storage.backends import LocalBackend

from .claim_worker import claim_rounds
from .conftest import s3_spec

CLAIMERS = 8
ROUNDS = int(os.environ.get("EMPO_CLAIM_ROUNDS", "20"))
LIMIT_S = 60 + 10 * ROUNDS  # moto lists slowly once hundreds of attempts exist


# moto is the second S3 implementation (SeaweedFS the first): slow, for the conditional PUT's sake only
@pytest.fixture(params=["local", "seaweedfs", pytest.param("moto", marks=pytest.mark.slow)])
def race_spec(request, tmp_path) -> tuple[str, StorageSpec]:
    if request.param == "local":
        return request.param, StorageSpec(uri=str(tmp_path / "store"))
    server = request.getfixturevalue("s3_env" if request.param == "seaweedfs" else "moto_env")
    return request.param, s3_spec(server, server.new_bucket())


def _check_rounds(label: str, rounds: dict[int, list[tuple[int, bool]]]) -> None:
    """Every round: CLAIMERS different attempts, the next CLAIMERS numbers, one of them the newest."""
    doubles = sum(CLAIMERS - len({a for a, _ in claims}) for claims in rounds.values())
    bad_rounds = sum(len({a for a, _ in claims}) < CLAIMERS for claims in rounds.values())
    newest = [sum(n for _, n in claims) for claims in rounds.values()]
    print(f"\n{label}: {len(rounds)} rounds x {CLAIMERS} claimers, {doubles} double claims in {bad_rounds} rounds, "
          f"fence passed by {min(newest)}-{max(newest)} claimers per round")
    assert len(rounds) == ROUNDS
    for r, claims in sorted(rounds.items()):
        assert sorted(a for a, _ in claims) == list(range(r * CLAIMERS + 1, (r + 1) * CLAIMERS + 1)), (r, claims)
        assert newest[r] == 1, (r, claims)


def test_claimers_in_threads_get_distinct_attempts(race_spec):
    label, spec = race_spec
    stores = [open_run_storage(spec, "team-a", "run-1", options=S3Options(max_attempts=3))
              for _ in range(CLAIMERS)]
    barrier = threading.Barrier(CLAIMERS)
    rounds: dict[int, list[tuple[int, bool]]] = {r: [] for r in range(ROUNDS)}
    errors: list[BaseException] = []

    def claimer(i: int) -> None:
        try:
            for r in range(ROUNDS):
                barrier.wait(60)
                attempt = stores[i].claim_attempt(claimer=i)
                barrier.wait(60)
                try:
                    stores[i].check_fence()
                    newest = True
                except SupersededError:
                    newest = False
                rounds[r].append((attempt, newest))
                barrier.wait(60)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(CLAIMERS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + LIMIT_S
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "the claimers did not finish in time"
    assert not errors, errors[0]
    _check_rounds(f"{label}, threads", rounds)


def test_claimers_in_processes_get_distinct_attempts(race_spec):
    label, spec = race_spec
    ctx = multiprocessing.get_context("spawn")  # no boto3 client or lock state inherited through fork
    barrier, results = ctx.Barrier(CLAIMERS), ctx.Queue()
    procs = [ctx.Process(target=claim_rounds, args=(spec.model_dump_json(), "run-1", ROUNDS, i, barrier, results))
             for i in range(CLAIMERS)]
    for p in procs:
        p.start()
    rounds: dict[int, list[tuple[int, bool]]] = {r: [] for r in range(ROUNDS)}
    deadline = time.monotonic() + LIMIT_S
    try:
        for _ in range(ROUNDS * CLAIMERS):
            r, claimer, attempt, newest = results.get(timeout=max(1.0, deadline - time.monotonic()))
            assert r >= 0, f"claimer {claimer} failed: {attempt}"
            rounds[r].append((attempt, newest))
    except queue.Empty:
        pytest.fail("the claimers did not finish in time")
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
    _check_rounds(f"{label}, processes", rounds)


def test_a_claim_that_keeps_losing_fails_clearly(tmp_path, monkeypatch):
    store = open_run_storage(StorageSpec(uri=str(tmp_path / "store")), "team-a", "run-1")
    monkeypatch.setattr(LocalBackend, "create_bytes", lambda self, key, data: False)  # every number taken
    with pytest.raises(StorageError, match="could not claim an attempt .* numbers in a row were taken"):
        store.claim_attempt()
    assert store.attempt is None  # not fenced to anything it does not hold


def test_a_retried_conditional_put_recognises_its_own_write(s3_env):
    """The first try of a PUT landed but its answer was lost; the retry gets 412. The object holds
    this claim's bytes, so the claim is won, not skipped (which would leave a gap and a stray attempt)."""
    store = open_run_storage(s3_spec(s3_env, s3_env.new_bucket()), "team-a", "run-1")
    backend = store.backend
    assert backend.create_bytes("attempts/attempt-000001.json", b'{"claim": "mine"}')
    assert backend.create_bytes("attempts/attempt-000001.json", b'{"claim": "mine"}')  # our earlier write
    assert not backend.create_bytes("attempts/attempt-000001.json", b'{"claim": "theirs"}')
    assert backend.get_bytes("attempts/attempt-000001.json") == b'{"claim": "mine"}'


def test_a_store_that_ignores_conditional_writes_is_reported(s3_env, caplog):
    """A store that drops If-None-Match (here: the header is removed before signing) cannot make the
    claim atomic; the first claim finds out and says so, naming the risk."""
    store = open_run_storage(s3_spec(s3_env, s3_env.new_bucket()), "team-a", "run-1")

    def drop_condition(request, **_):
        if "If-None-Match" in request.headers:
            del request.headers["If-None-Match"]

    store.backend.client.meta.events.register("before-sign.s3.PutObject", drop_condition)
    with caplog.at_level("WARNING", logger="empo_trainer.storage"):
        assert store.claim_attempt() == 1
    assert "ignores conditional writes (If-None-Match)" in caplog.text
    assert s3_env.secret_key not in caplog.text
