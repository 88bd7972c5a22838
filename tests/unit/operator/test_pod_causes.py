"""The first cause that keeps an attempt's pods from running, from pod bodies shaped as the kubelet
and scheduler write them (the node tests produce each for real: tests/e2e/test_pod_causes.py)."""

from empo_operator.pod_causes import first_cause, slim_pod


def pod(name, phase="Pending", conditions=(), containers=(), **status):
    return slim_pod({"metadata": {"name": name, "labels": {"empo.dev/run": "r"}},
                     "status": {"phase": phase, "conditions": list(conditions), "containerStatuses": list(containers),
                                **status}})


def container(name="ray-head", state=None, last=None):
    return {"name": name, "state": state or {}, "lastState": last or {}}


UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available: 1 Insufficient cpu."}


def test_nothing_wrong_is_no_cause():
    running = pod("h", "Running", [{"type": "PodScheduled", "status": "True"}],
                  [container(state={"running": {"startedAt": "t"}})])
    assert first_cause([running, pod("w")]) is None


def test_each_cause_names_its_pod_and_what_to_do():
    assert first_cause([pod("h", conditions=[UNSCHEDULABLE])]).as_tuple() == (
        "Unschedulable", "pod h: 0/1 nodes are available: 1 Insufficient cpu.")
    pull = container(state={"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x:1"'}})
    assert first_cause([pod("h", containers=[pull])]).as_tuple() == (
        "ImagePullBackOff", 'pod h container ray-head: Back-off pulling image "x:1"')
    crash = container(state={"waiting": {"reason": "CrashLoopBackOff"}},
                      last={"terminated": {"exitCode": 127, "reason": "Error"}})
    reason, message = first_cause([pod("h", "Running", containers=[crash])]).as_tuple()
    assert reason == "CrashLoopBackOff" and "exit code 127 (Error)" in message and "--previous" in message
    oom = container(state={"waiting": {"reason": "CrashLoopBackOff"}},
                    last={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    reason, message = first_cause([pod("h", "Running", containers=[oom])]).as_tuple()
    assert reason == "OOMKilled" and "spec.ray.head.memory" in message  # the cause, not the loop it causes
    evicted = pod("w", "Failed", reason="Evicted", message="The node was low on resource: ephemeral-storage.")
    assert first_cause([evicted]).as_tuple() == ("Evicted", "pod w: The node was low on resource: ephemeral-storage.")


def test_refused_creation_comes_first_then_placement():
    refused = {"reason": "FailedToCreateHeadPod", "type": "Warning",
               "involvedObject": {"kind": "RayCluster", "name": "r-abcde-0-xyz"},
               "message": 'pods "h" is forbidden: violates PodSecurity "restricted:latest"'}
    got = first_cause([pod("w", conditions=[UNSCHEDULABLE])], [refused])
    assert got.reason == "PodCreationRefused" and got.message.startswith("RayCluster r-abcde-0-xyz: pods")
    assert first_cause([pod("w", conditions=[UNSCHEDULABLE])], [{"reason": "Other"}]).reason == "Unschedulable"


def test_long_messages_are_cut():
    long = dict(UNSCHEDULABLE, message="x " * 1000)
    assert len(first_cause([pod("h", conditions=[long])]).message) < 420


def test_an_evicted_pod_that_kuberay_replaced_still_names_the_cause():
    from empo_operator.pod_causes import departed
    evicted = pod("h-1", "Failed", reason="Evicted", message="Pod ephemeral local storage usage exceeds the total limit")
    gone = departed(evicted)
    replacement = pod("h-2")  # Pending, nothing wrong yet
    reason, message = first_cause([replacement, gone]).as_tuple()
    assert reason == "Evicted" and message.startswith("pod h-1: Pod ephemeral") and "deleted" in message
    # A live pod's own cause comes first; a deleted pod without a cause is not remembered.
    assert first_cause([pod("h-2", conditions=[UNSCHEDULABLE]), gone]).reason == "Unschedulable"
    assert departed(replacement) is None
