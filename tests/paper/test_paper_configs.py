"""The study configs ship inside the package (samcli/paper/configs/NAME.yaml) and are read through
importlib.resources; a missing or broken config is a ConfigError, never a silent fall-back to defaults."""
from __future__ import annotations

import dataclasses
from importlib.resources import files

import pytest
import yaml

from samcli.config import ConfigError
from samcli.paper import STUDIES, reproduce
from samcli.paper.configs import load_study_config, packaged_config


def test_every_study_has_a_packaged_config_and_nothing_else_is_shipped():
    shipped = sorted(p.name for p in (files("samcli.paper") / "configs").iterdir() if p.name.endswith(".yaml"))
    assert shipped == sorted(f"{name}.yaml" for name in STUDIES)


@pytest.mark.parametrize("name", list(STUDIES))
def test_packaged_config_loads_and_states_the_built_in_defaults(name):
    """Without its quick: section the YAML states exactly the dataclass defaults; with --quick its quick:
    section is applied (the settings a non-editable install used to ignore)."""
    text = (files("samcli.paper") / "configs" / f"{name}.yaml").read_text()
    raw = yaml.safe_load(text)
    assert packaged_config(name).read_text() == text
    loaded = load_study_config(STUDIES[name].config, name)
    assert dataclasses.asdict(loaded) == dataclasses.asdict(STUDIES[name].config())
    quick = dataclasses.asdict(load_study_config(STUDIES[name].config, name, quick=True))
    flat_quick = {key: value for key, value in raw["quick"].items() if not isinstance(value, dict)}
    assert flat_quick and all(quick[key] == value for key, value in flat_quick.items())


def test_missing_packaged_config_is_a_config_error():
    with pytest.raises(ConfigError, match="no packaged study config 'nonexistent'"):
        packaged_config("nonexistent")
    with pytest.raises(ConfigError, match="no packaged study config"):
        load_study_config(STUDIES["quadratic"].config, "nonexistent")


def test_study_config_quick_overrides_and_errors(tmp_path):
    cfg = load_study_config(STUDIES["figure1"].config, "figure1", quick=True, overrides=["lr=0.02"])
    assert cfg.steps == 1500 and cfg.lr == 0.02 and cfg.gap.taus == [0.02, 0.04]
    with pytest.raises(ConfigError, match="unknown config key bogus"):
        load_study_config(STUDIES["figure1"].config, "figure1", overrides=["bogus=1"])
    with pytest.raises(ConfigError, match="start"):
        load_study_config(STUDIES["figure1"].config, "figure1", overrides=["start=[1, 2]"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_study_config(STUDIES["quadratic"].config, "quadratic", path=tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study_config(STUDIES["quadratic"].config, "quadratic", path=broken)


def test_user_config_path_is_used(tmp_path):
    own = tmp_path / "quadratic.yaml"
    own.write_text("steps: 7\nquick:\n  steps: 5\n")
    assert load_study_config(STUDIES["quadratic"].config, "quadratic", path=own).steps == 7
    assert load_study_config(STUDIES["quadratic"].config, "quadratic", path=own, quick=True).steps == 5


def test_all_refuses_config_and_set(tmp_path):
    with pytest.raises(ConfigError, match="one study"):
        reproduce("all", tmp_path, overrides=["steps=3"])
    with pytest.raises(ConfigError, match="unknown study"):
        reproduce("nonsense", tmp_path)


def test_every_paper_method_is_an_engine_method_of_the_registry():
    from samcli.paper.trajectory import METHODS
    from samcli.spec.methods import method_names
    assert {engine for engine, _ in METHODS.values()} <= set(method_names())
