"""Durations from the environment: the operator's settings and the trainer's storage window read
them through one parser, so both take and refuse the same values with the same message."""

import pytest

from empo_api.env_values import EnvValueError, seconds
from empo_operator.settings import from_env
from empo_trainer.storage.outage import ENV as OUTAGE_ENV
from empo_trainer.storage.s3_backend import S3Options


@pytest.mark.parametrize("raw, expected", [(None, 9.5), ("", 9.5), ("  ", 9.5), ("0", 0.0), ("7.5", 7.5), (" 30 ", 30.0)])
def test_a_number_of_seconds_or_the_default_when_unset_or_blank(raw, expected):
    env = {} if raw is None else {"X_SECONDS": raw}
    assert seconds(env, "X_SECONDS", 9.5) == expected


@pytest.mark.parametrize("raw, says", [("soon", "expected a number of seconds"), ("-1", "must not be negative"),
                                       ("nan", "finite"), ("inf", "finite"), ("-inf", "finite")])
def test_a_value_that_is_no_duration_is_refused_naming_the_variable(raw, says):
    with pytest.raises(EnvValueError, match=rf"X_SECONDS='{raw}': .*{says}"):
        seconds({"X_SECONDS": raw}, "X_SECONDS", 1.0)


@pytest.mark.parametrize("raw", ["nan", "-3", "soon"])
def test_the_operator_and_the_trainer_refuse_the_same_durations_with_the_same_message(raw, monkeypatch):
    with pytest.raises(EnvValueError) as operator_error:
        from_env({"EMPO_RESTART_BACKOFF_SECONDS": raw})
    monkeypatch.setenv(OUTAGE_ENV, raw)
    with pytest.raises(EnvValueError) as trainer_error:
        S3Options()
    assert str(operator_error.value).split(": ", 1)[1] == str(trainer_error.value).split(": ", 1)[1]
