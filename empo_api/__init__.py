"""The EmpoRun API: models, CRD generation and validation. Needs only pydantic and PyYAML."""

from .models import API_VERSION, GROUP, KIND, PLURAL, VERSION, EmpoRun, EmpoRunSpec, EmpoRunStatus, parse_run

__all__ = ["API_VERSION", "GROUP", "KIND", "PLURAL", "VERSION", "EmpoRun", "EmpoRunSpec", "EmpoRunStatus", "parse_run"]
