"""Lifecycle decisions without an API: what a live run keeps across an operator upgrade."""

import copy

from empo_api.models import EmpoRun
from empo_operator import builders, lifecycle
from empo_operator.defaults import defaulted
from empo_operator.rayjob import build_rayjob
from empo_operator.settings import Settings

BEFORE = Settings(trainer_image="registry.example/empo-trainer:1", default_storage_uri="s3://runs/a",
                  s3_endpoint="http://s3-a:8333")
AFTER = Settings(trainer_image="registry.example/empo-trainer:2", default_storage_uri="s3://runs/b",
                 s3_endpoint="http://s3-b:8333")  # `helm upgrade` changed every default


def manifest(**spec):
    doc = {"apiVersion": "empo.dev/v1alpha1", "kind": "EmpoRun", "metadata": {"name": "r", "namespace": "ns"},
           "spec": {"model": {"source": "Qwen/Qwen2.5-Math-1.5B"}, "dataset": {"uri": "s3://data/m.jsonl"}}}
    doc["spec"].update(copy.deepcopy(spec))
    return doc


def run(**spec):
    return EmpoRun.model_validate(manifest(**spec))


def accepted_with(settings):
    return lifecycle.accepted_spec(builders.build_configmap(defaulted(run(), settings)))


def judged_after_upgrade(accepted, **spec):
    """The run as a pass after `helm upgrade` judges it: defaulted once, against its record."""
    return lifecycle.validate_run(manifest(**spec), AFTER, accepted)


def test_an_operator_upgrade_leaves_edits_of_live_runs_allowed():
    accepted = accepted_with(BEFORE)
    assert judged_after_upgrade(accepted, suspend=True)[1] is None
    assert judged_after_upgrade(accepted, eval={"every": 10})[1] is None


def test_the_next_attempt_keeps_what_the_run_started_with():
    accepted = accepted_with(BEFORE)
    model, problem = judged_after_upgrade(accepted)
    assert problem is None
    rayjob = build_rayjob(model, AFTER, attempt=1)
    (head,) = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert head["image"] == "registry.example/empo-trainer:1"
    assert {"name": "AWS_ENDPOINT_URL", "value": "http://s3-a:8333"} in head["env"]
    assert model.spec.storage.uri == "s3://runs/a"
    assert builders.build_configmap(model) == builders.build_configmap(defaulted(run(), BEFORE))  # nothing to patch


def test_what_the_user_changes_is_still_refused():
    accepted = accepted_with(BEFORE)
    _, problem = judged_after_upgrade(accepted, ray={"image": "registry.example/other:3"})
    assert problem is not None and problem.message.startswith("spec.ray.image")
    assert "preRunningDeadlineSeconds" in problem.message  # the message lists what may change
    _, problem = judged_after_upgrade(accepted, storage={"uri": "s3://runs/c"})
    assert problem is not None and "spec.storage.uri" in problem.message


def test_a_bad_operator_default_waits_instead_of_failing_the_run():
    body = manifest()
    model, problem = lifecycle.validate_run(body, Settings(trainer_image="registry.example/x:1"))
    assert model is None and problem.reason == "OperatorDefaults" and not problem.permanent
    assert "default storage" in problem.message
    body["spec"]["storage"] = {"uri": "runs"}
    model, problem = lifecycle.validate_run(body, BEFORE)
    assert problem.reason == "InvalidSpec" and problem.permanent


def test_a_rayjob_stored_without_authoptions_is_called_out():
    sent = build_rayjob(defaulted(run(), BEFORE), BEFORE)
    assert lifecycle.ray_auth_dropped(sent) is None
    pruned = copy.deepcopy(sent)
    del pruned["spec"]["rayClusterSpec"]["authOptions"]  # what a KubeRay < 1.5.1 CRD makes of it
    why = lifecycle.ray_auth_dropped(pruned)
    assert "authOptions" in why and "KubeRay >= 1.5.1" in why
