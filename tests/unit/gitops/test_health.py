"""docs/gitops.md's health table is what the operator's status machine produces, read by kstatus's
generic rules (Flux, kubectl wait) and by the Argo CD health check the page gives."""

import re
from pathlib import Path

import pytest

from empo_operator.status import Observation, next_status

DOC = Path(__file__).resolve().parents[3] / "docs" / "gitops.md"
NOW = "2026-01-01T00:00:00Z"


def _rayjob(deployment: str, job: str = "") -> dict:
    return {"metadata": {"name": "run"}, "status": {"jobDeploymentStatus": deployment, "jobStatus": job}}


OBSERVATIONS = {
    "Pending": Observation(None, "run"),
    "Initializing": Observation(_rayjob("Initializing"), "run"),
    "Running": Observation(_rayjob("Running", "RUNNING"), "run"),
    "Restarting": Observation(None, "run-r1", restarts=1),
    "Suspended": Observation(None, "run", suspend=True),
    "Succeeded": Observation(_rayjob("Complete", "SUCCEEDED"), "run"),
    "Failed": Observation(_rayjob("Failed"), "run-r3", restarts=3, max_restarts=3),
}


def kstatus(obj: dict) -> str:
    """sigs.k8s.io/cli-utils kstatus for a custom resource: generation, Reconciling, Stalled, else Current."""
    status = obj.get("status") or {}
    gen, seen = obj["metadata"].get("generation"), status.get("observedGeneration")
    if gen is not None and seen is not None and seen != gen:
        return "InProgress"
    for c in status.get("conditions") or []:
        if c["type"] == "Reconciling" and c["status"] == "True":
            return "InProgress"
        if c["type"] == "Stalled" and c["status"] == "True":
            return "Failed"
    return "Current"


def argocd_health(obj: dict) -> str:
    """The Lua health check in docs/gitops.md, line by line."""
    status = obj.get("status") or {}
    if not status.get("conditions"):
        return "Progressing"
    gen, seen = obj["metadata"].get("generation"), status.get("observedGeneration")
    if gen is not None and seen is not None and seen < gen:
        return "Progressing"
    c = {cond["type"]: cond["status"] == "True" for cond in status["conditions"]}
    for ctype, health in (("Stalled", "Degraded"), ("Reconciling", "Progressing"),
                          ("Suspended", "Suspended"), ("Ready", "Healthy")):
        if c.get(ctype):
            return health
    return "Progressing"


def _doc_rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and (cells[0] in OBSERVATIONS or cells[0] == "(no status yet)"):
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize("phase", OBSERVATIONS)
def test_doc_row_matches_the_operator(phase):
    obs = OBSERVATIONS[phase]
    obj = {"metadata": {"name": "run", "generation": 1}, "status": None}
    obs = Observation(**{**obs.__dict__, "generation": 1})
    upd = next_status({}, obs, NOW)
    assert upd.patch["phase"] == phase
    obj["status"] = upd.patch
    cond = {c["type"]: c["status"] for c in upd.patch["conditions"]}
    expected = [cond["Ready"], cond["Reconciling"], cond["Stalled"], kstatus(obj), argocd_health(obj)]
    assert _doc_rows()[phase] == expected


def test_doc_row_for_a_run_without_status():
    obj = {"metadata": {"name": "run", "generation": 1}}
    assert _doc_rows()["(no status yet)"][3:] == [kstatus(obj), argocd_health(obj)]


def test_doc_lua_is_the_one_transcribed_here():
    lua = DOC.read_text().split("resource.customizations.health.empo.dev_EmpoRun: |", 1)[1].split("```", 1)[0]
    order = re.findall(r'is\("(\w+)"\) then hs.status = "(\w+)"', lua)
    assert order == [("Stalled", "Degraded"), ("Reconciling", "Progressing"), ("Suspended", "Suspended"), ("Ready", "Healthy")]
    assert "observedGeneration < obj.metadata.generation" in lua
