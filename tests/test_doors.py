"""Every value checked at every door (issue #17): big integers, study configs under --set, a checkpoint's
schema, an empty --out, strict booleans and a damaged data cache. Each bad case is one line (exit code 2
on the CLI, a SamcliError in Python) that names what is wrong, and leaves every finished file as it was.
"""
from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from samcli import paper
from samcli.cli import app
from samcli.config import ConfigError, DataConfig, SamcliError, TrainConfig
from samcli.data import CacheWarning, load_data, mnist1d_cache
from samcli.paper.configs import check_rules, load_study_config, unruled_keys
from samcli.runs import CHECKPOINT, SHARPNESS, load_run
from samcli.train import train

sys.path.insert(0, str(Path(__file__).parent / "study"))
from study_helpers import file_states  # noqa: E402

TINY = {"data": {"name": "synthetic", "n_train": 32, "n_test": 8, "dim": 4, "classes": 3},
        "model": {"name": "mlp", "widths": [5]}, "optimizer": {"batch_size": 8}, "steps": 2, "eval_every": 1}


def refused(args: list[str]) -> str:
    """Run the CLI in-process; assert exit 2, no traceback, nothing on stdout, one line on stderr; return it."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    return lines[0]


def one_line(err: BaseException) -> str:
    assert "\n" not in str(err), str(err)
    return str(err)


# ---- 1. integers within their type's range ---------------------------------------------------------

BIG = str(2 ** 70)


@pytest.mark.parametrize("item, fragment", [
    (f"seed={BIG}", f"seed={BIG} is out of range"),
    ("seed=-1", "seed=-1 must be in [0, 2**63 - 1]"),
    (f"measure.seed={BIG}", "measure.seed"),
    (f"steps={BIG}", "steps"),
    (f"data.train_size={BIG}", "data.train_size"),          # Optional[int]: still "out of range"
    (f"optimizer.batch_size={BIG}", "optimizer.batch_size"),  # int or 'full'
    (f"model.widths=[{BIG}]", "model.widths[0]"),
])
def test_an_integer_beyond_64_bits_is_one_line(tmp_path, monkeypatch, item, fragment):
    monkeypatch.chdir(tmp_path)
    line = refused(["train", "--dataset", "synthetic", "--set", item, "--out", str(tmp_path / "run"), "--quiet"])
    assert fragment in line and ("out of range" in line or "must be in" in line), line
    assert not (tmp_path / "run").exists()


def test_the_largest_seed_trains(tmp_path):
    """2**63 - 1 is accepted and works: the seeds derived from it (subsets, synthetic draws) wrap below 2**64."""
    result = train({**TINY, "seed": 2 ** 63 - 1, "data": {**TINY["data"], "train_size": 16}}, tmp_path / "run")
    assert result.status == "completed"


# ---- 2. reproduce --set checked by the study's own rules --------------------------------------------

REPRODUCE_CASES = [
    ("quadratic", "threads=0", "threads=0"),
    ("quadratic", "threads=-1", "threads=-1"),
    ("quadratic", "tol_radius=-1", "tol_radius=-1.0"),
    ("quadratic", "record_every=0", "record_every=0"),
    ("quadratic", "start_norm=.nan", "start_norm=nan"),
    ("quadratic", "cases=[{eigenvalues: [1.0, .inf], lr: 0.1, rho: 0.1}]", "cases[0].eigenvalues[1]=inf"),
    ("quadratic", f"cases=[{{lr: 0.1, rho: 0.1, seed: {BIG}}}]", "cases[0].seed"),
    ("figure1", "gap.taus=[0.1, -1]", "gap.taus[1]=-1.0"),
    ("figure1", "sam_in_regime.start=[]", "sam_in_regime.start"),    # an empty list is not null
    ("figure1", f"seed={BIG}", "seed"),
    ("network", "tol_cos=1.5", "tol_cos=1.5"),
    ("network", "activation=sigmoid", "activation='sigmoid'"),
    ("batchsize", "batch_sizes=[1, half]", "batch_sizes[1]='half'"),
    ("corollaries", "network.widths=[0]", "network.widths[0]=0"),
    ("corollaries", "network_rhos=[0.1, 1.5]", "network_rhos[1]=1.5"),
    ("timescale", "runs=[{method: sam, lr: 0.1, rhos: [0.1, 0.05]}]", "runs[0].method='sam'"),
    ("bias", "tol_gap=.inf", "tol_gap=inf"),
]


@pytest.mark.parametrize("study, item, fragment", REPRODUCE_CASES, ids=[f"{s}-{i}" for s, i, _ in REPRODUCE_CASES])
def test_reproduce_set_is_checked_before_anything_runs(tmp_path, study, item, fragment):
    out = tmp_path / "paper"
    (out / study).mkdir(parents=True)
    (out / study / "verdicts.md").write_text("a finished study\n")
    before = file_states(out / study)
    line = refused(["reproduce", study, "--quick", "--out", str(out), "--set", item, "--quiet"])
    assert fragment in line, line
    assert file_states(out / study) == before          # nothing ran, nothing was replaced


def test_every_key_of_every_study_config_has_a_rule():
    """A key added without a rule would be the next unchecked door."""
    for study in paper.STUDIES.values():
        assert unruled_keys(study.config) == [], study.name


@pytest.mark.parametrize("name", list(paper.STUDIES))
def test_the_packaged_study_configs_keep_their_own_rules(name):
    for quick in (False, True):
        check_rules(load_study_config(paper.STUDIES[name].config, name, quick=quick), name)


def test_a_study_yaml_is_held_to_the_same_rules(tmp_path):
    path = tmp_path / "quadratic.yaml"
    path.write_text("steps: 10\nrecord_every: 2\nthreads: 0\n")
    with pytest.raises(ConfigError, match="threads=0 is not allowed in the quadratic study config") as err:
        paper.reproduce("quadratic", tmp_path / "out", config=path)
    one_line(err.value)
    assert not (tmp_path / "out").exists()


# ---- 3. a checkpoint's schema, before use ------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("doors") / "run"
    train(TINY, run)
    return run


def _drop(key):
    return lambda state: {k: v for k, v in state.items() if k != key}


CHECKPOINT_CASES = [
    (lambda state: {**state, "theta": state["theta"][:-3]}, "parameters, but its config's model"),
    (_drop("theta"), "no 'theta' field"),
    (_drop("config"), "no 'config' field"),
    (lambda state: {**state, "theta": state["theta"].tolist()}, "theta as a list"),
    (lambda state: {**state, "theta": state["theta"].reshape(1, -1)}, "not a flat float vector"),
    (lambda state: {**state, "theta": state["theta"].long()}, "torch.int64"),
    (lambda state: {**state, "config": ["not", "a", "mapping"]}, "config of type list"),
    (lambda state: {**state, "config": {**state["config"], "steps": 0}}, "invalid config (steps=0"),
    (lambda state: {**state, "buffers": [1, 2]}, "buffers field"),
    (lambda state: {**state, "buffers": {"0.running_mean": torch.zeros(5)}}, "buffer '0.running_mean'"),
    (lambda state: [state["theta"]], "not a mapping"),
]


@pytest.mark.parametrize("edit, fragment", CHECKPOINT_CASES, ids=[f"checkpoint-{i}" for i in range(len(CHECKPOINT_CASES))])
def test_a_checkpoint_with_a_wrong_schema_is_one_line(finished_run, tmp_path, edit, fragment):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    state = torch.load(run / CHECKPOINT, weights_only=True)
    torch.save(edit(state), run / CHECKPOINT)
    before = file_states(run)
    with pytest.raises(SamcliError, match=str(run / CHECKPOINT)) as err:
        load_run(run)
    assert fragment in one_line(err.value), err.value
    line = refused(["sharpness", str(run), "--samples", "8"])
    assert str(run / CHECKPOINT) in line and fragment in line, line
    assert file_states(run) == before and not (run / SHARPNESS).exists()


def test_the_untouched_checkpoint_still_loads(finished_run):
    cfg, state = load_run(finished_run)
    assert state["theta"].numel() == 4 * 5 + 5 + 5 * 3 + 3 and cfg.steps == 2


# ---- 6. an empty --out -------------------------------------------------------------------------------

def test_an_empty_out_is_refused_not_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("the user's own file\n")
    line = refused(["train", "--dataset", "synthetic", "--steps", "2", "--out", "", "--quiet"])
    assert "--out ''" in line or "--out '.'" in line, line
    for out in ("", ".", Path("")):
        with pytest.raises(SamcliError, match="empty or the current directory") as err:
            train(TINY, out)
        one_line(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ---- 7. booleans are booleans ------------------------------------------------------------------------

@pytest.mark.parametrize("raw, key", [
    ({"data": {"download": "no"}}, "data.download"),
    ({"data": {"augment": 0}}, "data.augment"),
    ({"optimizer": {"nesterov": "true"}, "steps": 1}, "optimizer.nesterov"),
])
def test_a_boolean_is_true_or_false_only(raw, key):
    with pytest.raises(ConfigError, match=f"{key}=.* must be true or false"):
        TrainConfig.from_dict(raw)


# ---- 5. a damaged mnist1d cache ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_cache(tmp_path_factory) -> tuple[bytes, torch.Tensor]:
    """One generated cache (seconds): its bytes, and the training inputs it gives."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAMCLI_CACHE", str(folder))
        splits = load_data(DataConfig(name="mnist1d"))
        return mnist1d_cache().read_bytes(), splits.train.inputs


def _truncated(good: bytes, path: Path) -> None:
    path.write_bytes(good[: len(good) // 2])


def _wrong_shape(good: bytes, path: Path) -> None:
    np.savez(path, x=np.zeros((10, 40)), y=np.zeros(10, dtype=np.int64), x_test=np.zeros((5, 40)),
             y_test=np.zeros(5, dtype=np.int64))


@pytest.mark.parametrize("damage, why", [(_truncated, "cannot be read"), (_wrong_shape, r"x has shape \(10, 40\)")])
def test_a_damaged_cache_is_regenerated_with_a_warning(good_cache, tmp_path, monkeypatch, damage, why):
    good, inputs = good_cache
    monkeypatch.setenv("SAMCLI_CACHE", str(tmp_path))
    cache = tmp_path / "mnist1d.npz"
    damage(good, cache)
    with pytest.warns(CacheWarning, match=why) as caught:
        splits = load_data(DataConfig(name="mnist1d"))
    assert str(cache) in str(caught[0].message)
    assert torch.equal(splits.train.inputs, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)      # the regenerated cache is whole: no second warning
        assert torch.equal(load_data(DataConfig(name="mnist1d")).train.inputs, inputs)


def test_a_damaged_cache_that_cannot_be_regenerated_is_one_line(good_cache, tmp_path, monkeypatch):
    good, _ = good_cache
    monkeypatch.setenv("SAMCLI_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "mnist1d", None)      # the package is not installed: import fails
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    cache = tmp_path / "mnist1d.npz"
    _truncated(good, cache)
    with pytest.warns(CacheWarning), pytest.raises(ConfigError, match=f"the mnist1d cache {cache} is damaged") as err:
        load_data(DataConfig(name="mnist1d"))
    assert "pip install mnist1d" in one_line(err.value)
    assert cache.read_bytes() == good[: len(good) // 2]     # left for the user to inspect, not replaced


def test_a_regenerated_cache_is_one_warning_line_on_the_command_line(good_cache, tmp_path):
    """Through the real CLI (a subprocess, so Python's own warning display is what would show): one
    `warning:` line naming the cache, and the run trains."""
    import os
    import subprocess
    import sys
    good, _ = good_cache
    cache = tmp_path / "cache"
    cache.mkdir()
    _truncated(good, cache / "mnist1d.npz")
    env = dict(os.environ, SAMCLI_CACHE=str(cache), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-m", "samcli.cli", "train", "--dataset", "mnist1d", "--steps", "1",
                           "--out", str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: the mnist1d cache") and str(cache) in lines[0], lines


def test_an_integer_beyond_pythons_digit_limit_is_one_line(tmp_path):
    """YAML hands Python a 5000-digit integer, which int() refuses (ValueError): still one line."""
    huge = "9" * 5000
    line = refused(["train", "--dataset", "synthetic", "--set", f"seed={huge}", "--out", str(tmp_path / "r"),
                    "--quiet"])
    assert "seed=" in line and len(line) < 400, line
    path = tmp_path / "huge.yaml"
    path.write_text(f"seed: {huge}\n")
    line = refused(["train", str(path), "--out", str(tmp_path / "r2"), "--quiet"])
    assert "holds a value YAML cannot read" in line, line
