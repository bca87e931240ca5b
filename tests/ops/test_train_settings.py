"""Every training tunable is set from the environment, by its own name (or als_<name>)."""

from __future__ import annotations

import dataclasses

import pytest

from app.ml.params import TrainParams
from app.settings import Settings, train_params


def test_every_tunable_comes_from_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = train_params(Settings(_env_file=None), now=0.0)  # type: ignore[call-arg]
    changed = {}
    for field in dataclasses.fields(TrainParams):
        if field.name in {"now", "data_now", "personal_model", "seed"}:
            continue
        setting = f"als_{field.name}" if field.name in {"factors", "iterations", "regularization", "alpha"} else field.name
        value = getattr(defaults, field.name)
        if isinstance(value, bool):
            changed[field.name] = not value
        else:
            changed[field.name] = value * 2 if value else 3
        monkeypatch.setenv(f"LEHNZ_{setting.upper()}", str(changed[field.name]))
    params = train_params(Settings(_env_file=None), now=5.0, data_now=4.0)  # type: ignore[call-arg]
    assert (params.now, params.data_now) == (5.0, 4.0)
    assert {name: getattr(params, name) for name in changed} == changed
