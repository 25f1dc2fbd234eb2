"""Configuration (samcli.config): typed construction, validation with one-line errors naming the
key, --set parsing, YAML loading; and the data-dependent checks done when the task is built."""
from __future__ import annotations

import pytest

from conftest import tiny_config
from samcli.config import (ConfigError, OptimizerConfig, SamcliError, TrainConfig, apply_override, config_hash,
                           load_yaml)
from samcli.task import build_task


def error_of(raw) -> str:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(raw)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


def test_defaults_are_valid_and_round_trip():
    cfg = TrainConfig.from_dict({})
    assert cfg == TrainConfig()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.optimizer.method == "sgd" and cfg.optimizer.rho == 0.05 and cfg.optimizer.m is None
    tiny = TrainConfig.from_dict(tiny_config())
    assert tiny.data.n_train == 16 and tiny.model.widths == [4] and tiny.optimizer.batch_size == 4
    assert isinstance(TrainConfig.from_dict({"optimizer": {"lr": 1}}).optimizer.lr, float)   # int -> float


def test_replace_uses_dotted_keys_and_validates():
    cfg = TrainConfig.from_dict(tiny_config())
    other = cfg.replace(**{"optimizer.rho": 0.2, "steps": 7})
    assert other.optimizer.rho == 0.2 and other.steps == 7 and cfg.optimizer.rho == 0.05
    with pytest.raises(ConfigError, match="optimizer.rho"):
        cfg.replace(**{"optimizer.rho": -1.0})


@pytest.mark.parametrize("raw,key", [
    ({"stpes": 5}, "stpes"),
    ({"optimizer": {"rh": 0.1}}, "optimizer.rh"),
    ({"data": {"n_trian": 5}}, "data.n_trian"),
    ({"model": {"width": [4]}}, "model.width"),
    ({"measure": {"nope": 1}}, "measure.nope"),
])
def test_unknown_keys_are_refused_with_their_full_name(raw, key):
    message = error_of(raw)
    assert f"unknown config key {key};" in message
    assert "allowed keys here:" in message


@pytest.mark.parametrize("raw,key", [
    ({"steps": "ten"}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"steps": True}, "steps"),                              # bool is not an int here
    ({"optimizer": {"lr": "fast"}}, "optimizer.lr"),
    ({"optimizer": {"lr": True}}, "optimizer.lr"),
    ({"optimizer": {"nesterov": 1}}, "optimizer.nesterov"),
    ({"optimizer": {"batch_size": "half"}}, "optimizer.batch_size"),
    ({"optimizer": {"batch_size": 2.0}}, "optimizer.batch_size"),
    ({"optimizer": {"m": "two", "method": "msam"}}, "optimizer.m"),
    ({"optimizer": {"schedule": "linear"}}, "optimizer.schedule"),
    ({"optimizer": {"milestones": 0.5}}, "optimizer.milestones"),
    ({"model": {"widths": [4, "x"]}}, "model.widths[1]"),
    ({"model": {"activation": "swish"}}, "model.activation"),
    ({"data": {"name": 3}}, "data.name"),
    ({"dtype": "float16"}, "dtype"),
    ({"device": "tpu"}, "device"),
    ({"optimizer": 0.1}, "optimizer"),
])
def test_wrong_types_name_the_key(raw, key):
    message = error_of(raw)
    assert message.startswith(f"{key}=") or message.startswith(f"{key} must")


@pytest.mark.parametrize("raw,key", [
    ({"optimizer": {"rho": -0.05}}, "optimizer.rho"),
    ({"measure": {"rho": 0}}, "measure.rho"),
    ({"optimizer": {"lr": 0}}, "optimizer.lr"),
    ({"optimizer": {"momentum": 1.0}}, "optimizer.momentum"),
    ({"optimizer": {"weight_decay": -1e-4}}, "optimizer.weight_decay"),
    ({"optimizer": {"nesterov": True}}, "optimizer.nesterov"),
    ({"optimizer": {"grad_eps": -1.0}}, "optimizer.grad_eps"),
    ({"optimizer": {"batch_size": 0}}, "optimizer.batch_size"),
    ({"optimizer": {"milestones": [0.75, 0.5]}}, "optimizer.milestones"),
    ({"optimizer": {"milestones": [1.5]}}, "optimizer.milestones"),
    ({"steps": 0}, "steps"),
    ({"eval_every": 0}, "eval_every"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"data": {"label_noise": 1.5}}, "data.label_noise"),
    ({"data": {"train_size": 0}}, "data.train_size"),
    ({"model": {"depth": 34}}, "model.depth"),
    ({"model": {"widths": [0]}}, "model.widths"),
    ({"measure": {"notions": ["worst", "flat"]}}, "measure.notions"),
])
def test_impossible_values_name_the_key(raw, key):
    assert key in error_of(raw)


@pytest.mark.parametrize("raw,key,value", [
    ({"optimizer": {"method": "adam"}}, "optimizer.method", "adam"),
    ({"model": {"name": "vit"}}, "model.name", "vit"),
    ({"data": {"name": "imagenet"}}, "data.name", "imagenet"),
])
def test_unknown_choices_list_the_alternatives(raw, key, value):
    message = error_of(raw)
    assert f"{key}={value!r} is unknown" in message and "choose one of" in message


@pytest.mark.parametrize("raw,hint", [
    ({"optimizer": {"method": "samm"}}, "(did you mean sam?)"),
    ({"optimizer": {"method": "ascent"}}, "(did you mean ascent-gd?)"),
    ({"data": {"name": "mnist1"}}, "(did you mean mnist1d?)"),
    ({"model": {"name": "resnt"}}, "(did you mean resnet?)"),
])
def test_near_misses_get_a_suggestion(raw, hint):
    assert hint in error_of(raw)
    assert "did you mean" not in error_of({"optimizer": {"method": "lion"}})


def test_a_method_added_to_the_registry_is_accepted_by_validation(monkeypatch):
    from samcli.spec import methods
    monkeypatch.setitem(methods.METHODS, "fake", methods.MethodSpec("fake", "a test method", frozenset({"rho", "m"})))
    cfg = TrainConfig.from_dict({"optimizer": {"method": "fake", "m": 2, "batch_size": 4}})
    assert cfg.optimizer.method == "fake"
    assert "optimizer.m is required for method fake" in error_of({"optimizer": {"method": "fake", "batch_size": 4}})
    assert "fake" in error_of({"optimizer": {"method": "adam"}})      # listed among the choices
    monkeypatch.delitem(methods.METHODS, "fake")
    assert "optimizer.method='fake' is unknown" in error_of({"optimizer": {"method": "fake", "m": 2}})


def test_msam_group_size_rules():
    assert TrainConfig.from_dict({"optimizer": {"method": "msam", "m": 4, "batch_size": 8}}).optimizer.m == 4
    assert "optimizer.m is required" in error_of({"optimizer": {"method": "msam", "batch_size": 8}})
    message = error_of({"optimizer": {"method": "msam", "m": 3, "batch_size": 8}})
    assert "optimizer.m=3 does not divide optimizer.batch_size=8" in message
    assert "optimizer.m=0" in error_of({"optimizer": {"method": "msam", "m": 0, "batch_size": 8}})
    message = error_of({"optimizer": {"method": "sam", "m": 4}})
    assert "optimizer.m=4 only applies to method msam" in message


def test_data_dependent_checks_when_building_the_task():
    with pytest.raises(ConfigError, match=r"optimizer.batch_size=17 exceeds the 16 training examples"):
        build_task(TrainConfig.from_dict(tiny_config(**{"optimizer.batch_size": 17})))
    build_task(TrainConfig.from_dict(tiny_config(**{"optimizer.batch_size": 16})))     # the boundary is fine
    cfg = tiny_config(**{"optimizer.method": "msam", "optimizer.m": 3, "optimizer.batch_size": "full"})
    with pytest.raises(ConfigError, match=r"optimizer.m=3 does not divide the 16 training examples"):
        build_task(TrainConfig.from_dict(cfg))
    with pytest.raises(ConfigError, match="loss=cross-entropy"):
        build_task(TrainConfig.from_dict(tiny_config(**{"data.task": "regression"})))
    with pytest.raises(ConfigError, match="data.train_size=17"):
        build_task(TrainConfig.from_dict(tiny_config(**{"data.train_size": 17})))
    with pytest.raises(ConfigError, match="model.name=cnn needs image inputs"):
        build_task(TrainConfig.from_dict(tiny_config(**{"model.name": "cnn"})))


def test_config_error_is_a_user_facing_error():
    assert issubclass(ConfigError, SamcliError) and issubclass(ConfigError, ValueError)


# ---- --set parsing --------------------------------------------------------------------------

@pytest.mark.parametrize("item,key,value", [
    ("optimizer.rho=0.1", ("optimizer", "rho"), 0.1),
    ("optimizer.lr=1e-5", ("optimizer", "lr"), 1e-5),                # exponent without a dot
    ("optimizer.weight_decay=5e-4", ("optimizer", "weight_decay"), 5e-4),
    ("optimizer.lr=-2.5E+3", ("optimizer", "lr"), -2500.0),
    ("optimizer.lr=.5", ("optimizer", "lr"), 0.5),
    ("steps=20", ("steps",), 20),
    ("optimizer.nesterov=true", ("optimizer", "nesterov"), True),
    ("optimizer.batch_size=full", ("optimizer", "batch_size"), "full"),
    ("model.widths=[8, 16]", ("model", "widths"), [8, 16]),
    ("optimizer.m=null", ("optimizer", "m"), None),
    ("data.name=synthetic", ("data", "name"), "synthetic"),
    (" seed = 3", ("seed",), 3),
    ("data.root=/tmp/a=b", ("data", "root"), "/tmp/a=b"),            # split at the first '='
])
def test_set_parses_values_as_yaml(item, key, value):
    raw = {"optimizer": {"rho": 0.05}}
    apply_override(raw, item)
    node = raw
    for part in key:
        node = node[part]
    assert node == value and type(node) is type(value)
    if key[0] == "optimizer" and key[1] != "rho":
        assert raw["optimizer"]["rho"] == 0.05                     # siblings kept


def test_set_errors():
    with pytest.raises(ConfigError, match="needs the form key.sub=value"):
        apply_override({}, "optimizer.rho")
    with pytest.raises(ConfigError, match="cannot set steps.x: steps is not a section"):
        apply_override({"steps": 5}, "steps.x=1")
    raw = {}
    apply_override(raw, "optimizer.lr=fast")                        # parses; the type check refuses it
    assert "optimizer.lr='fast' must be a number" in error_of(raw)


def test_load_yaml_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 7\noptimizer:\n  method: sam\n  rho: 0.1\n  weight_decay: 5e-4\n")
    cfg = TrainConfig.load(path, ["optimizer.rho=0.2", "model.widths=[3]"])
    assert (cfg.steps, cfg.optimizer.method, cfg.optimizer.rho, cfg.model.widths) == (7, "sam", 0.2, [3])
    assert cfg.optimizer.weight_decay == 5e-4


@pytest.mark.parametrize("text,fragment", [
    (None, "does not exist"),
    ("steps: [1, 2\n", "is not valid YAML at line"),
    ("- 1\n- 2\n", "must hold a mapping of keys, not list"),
])
def test_load_yaml_errors(tmp_path, text, fragment):
    path = tmp_path / "c.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_yaml(path)


def test_empty_yaml_is_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert TrainConfig.load(path) == TrainConfig()


def test_config_hash_is_stable_and_sensitive():
    a = TrainConfig.from_dict(tiny_config())
    b = TrainConfig.from_dict(tiny_config())
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 16
    assert config_hash(a) != config_hash(a.replace(**{"optimizer.rho": 0.06}))
    assert config_hash(a) != config_hash(a.replace(seed=1))


def test_optimizer_config_defaults_match_the_paper():
    o = OptimizerConfig()
    assert o.rho == 0.05 and o.momentum == 0.0 and o.grad_eps > 0


def test_msam_with_batchnorm_is_refused_before_training():
    from samcli.task import build_task
    cfg = TrainConfig.from_dict({"data": {"name": "digits"}, "model": {"name": "cnn", "norm": "batch"},
                                 "optimizer": {"method": "msam", "m": 4, "batch_size": 16}, "steps": 1})
    with pytest.raises(ConfigError, match="model.norm: group or none"):
        build_task(cfg)
    build_task(cfg.replace(**{"model.norm": "group"}))   # the suggested fix works
