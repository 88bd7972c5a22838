"""The reward tests' specs and bundled models (tests/unit/trainer/rewards/conftest.py)."""

from tests.unit.trainer.rewards.conftest import make_spec, math_eq, minilm  # noqa: F401  (fixtures)
