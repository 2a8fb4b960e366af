"""The retention and admission settings (issue 21): parsed, checked together, reported at once."""

from __future__ import annotations

import pytest

from sllm.config import ConfigError, Settings


def test_retention_and_admission_settings_are_parsed() -> None:
    s = Settings.from_env(
        {
            "KEEP_ALIVE_POLICY": "Histogram",
            "EVICTION": "expected-cost",
            "PREFETCH": "true",
            "ADMISSION_DEADLINE": "45",
            "HAND_BACK": "true",
            "MIGRATE": "true",
        }
    )
    assert (s.keep_alive_policy, s.eviction, s.prefetch) == ("histogram", "expected-cost", True)
    assert s.admission_deadline == 45.0 and s.hand_back and s.migrate


def test_the_defaults_keep_the_fixed_keep_alive_lru_and_no_deadline() -> None:
    s = Settings.from_env({})
    assert (s.keep_alive_policy, s.eviction, s.prefetch, s.admission_deadline) == (
        "fixed",
        "lru",
        False,
        0.0,
    )
    assert not s.hand_back and not s.migrate


def test_bad_values_and_prefetch_without_a_histogram_are_listed_together() -> None:
    env = {
        "KEEP_ALIVE_POLICY": "arima",
        "EVICTION": "lfu",
        "ADMISSION_DEADLINE": "-1",
        "HAND_BACK": "sometimes",
        "MIGRATE": "2",
    }
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    problems = info.value.problems
    assert len(problems) == 5
    assert any(p.startswith("HAND_BACK='sometimes'") for p in problems)
    assert any(p.startswith("MIGRATE='2'") for p in problems)
    assert any(p.startswith("KEEP_ALIVE_POLICY='arima'") for p in problems)
    assert any(p.startswith("EVICTION='lfu'") for p in problems)
    assert any(p.startswith("ADMISSION_DEADLINE='-1'") for p in problems)
    with pytest.raises(ConfigError, match="needs KEEP_ALIVE_POLICY=histogram"):
        Settings.from_env({"PREFETCH": "true"})


def test_the_held_queue_is_set_with_a_deadline_and_refused_without_one() -> None:
    s = Settings.from_env({"ADMISSION_DEADLINE": "60", "ADMISSION_HOLD": "45"})
    assert (s.admission_deadline, s.admission_hold) == (60.0, 45.0)
    assert Settings.from_env({}).admission_hold == 0.0
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"ADMISSION_HOLD": "45", "MIGRATE": "2"})
    problems = info.value.problems
    assert len(problems) == 2  # both, at once
    assert any(p.startswith("ADMISSION_HOLD=45.0: needs ADMISSION_DEADLINE") for p in problems)
