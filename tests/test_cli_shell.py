"""The command line as a shell around the engine: Click's own parsing errors in samcli's one-line format
(did-you-mean for options, commands and names, in any case), echoed values cut to a readable length,
errors about a setting in command-line words, one error path per command, --version, -h and the
defaults in --help, results on stdout and everything else on stderr."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import samcli.paper
import samcli.study
import samcli.study.rundir
from samcli._version import __version__
from samcli.cli import app
from samcli.config import ConfigError, TrainConfig
from samcli.errors import SettingError, short_repr
from samcli.render import LINE_LIMIT

runner = CliRunner()
TINY = ["--dataset", "synthetic", "--device", "cpu", "--dtype", "float64", "--set", "data.n_train=16",
        "--set", "data.n_test=8", "--set", "data.dim=3", "--set", "data.classes=2", "--set", "model.widths=[4]",
        "--batch-size", "4", "--steps", "2"]
# 9^6 ones behind 200 bytes of YAML anchors: its repr is megabytes
BOMB = ("seed: [&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b],\n"
        "       &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e]]\n")


def invoke(args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def one_line_error(result) -> str:
    """The one stderr line of a refused command (exit 2, nothing on stdout, no traceback)."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shell") / "run"
    result = invoke(["train", *TINY, "--out", out, "--quiet"])
    assert result.exit_code == 0, result.output
    return out


# ---- Click's parsing errors: one line, with the fix -------------------------------------------------

@pytest.mark.parametrize("args, fragments", [
    (["train", "--lr", "abc"], ["--lr='abc' must be a number", "see 'samcli train --help'"]),
    (["train", "--steps", "1e3"], ["--steps='1e3' must be an integer (write 1000)"]),
    (["train", "--seed", "1.5"], ["--seed='1.5' must be an integer;"]),
    (["compare", "--jobs", "abc"], ["--jobs='abc' must be an integer", "samcli compare --help"]),
    (["sharpness", "somewhere", "--rho", "abc"], ["--rho='abc' must be a number"]),
    (["train", "--lrr", "0.1"], ["samcli train has no option --lrr (did you mean --lr?)"]),
    (["train", "--LR", "0.1"], ["has no option --LR (did you mean --lr?)"]),
    (["train", "--qiuet"], ["(did you mean --quiet?)"]),
    (["sharpness", "--hepl"], ["(did you mean --help?)"]),
    (["reproduce", "--lisst"], ["samcli reproduce has no option --lisst (did you mean --list?)"]),
    (["train", "-x"], ["samcli train has no option -x;"]),
    (["trian"], ["samcli has no command 'trian' (did you mean train?)", "train, sharpness, compare, reproduce"]),
    (["Compare"], ["(did you mean compare?)"]),
    (["frobnicate"], ["samcli has no command 'frobnicate'; the commands are"]),
    (["sharpness"], ["samcli sharpness needs RUN_DIR (a run directory written by `samcli train`)"]),
    (["train", "--lr"], ["--lr needs a value; see 'samcli train --help'"]),
    (["train", "--quiet=yes"], ["--quiet is a flag and takes no value"]),
    (["train", "a.yaml", "b.yaml"], ["samcli train: got unexpected extra argument", "b.yaml"]),
    (["--versoin"], ["samcli has no option --versoin (did you mean --version?)"]),
])
def test_a_parsing_error_is_one_line(args, fragments):
    line = one_line_error(invoke(args))
    for fragment in fragments:
        assert fragment in line, line
    assert "Usage:" not in line and "╭" not in line


def test_a_parsing_error_from_the_installed_command_is_one_line():
    """The real entry point (sys.argv, the program name python -m gives) says `samcli train`."""
    proc = subprocess.run([sys.executable, "-m", "samcli.cli", "train", "--steps", "1e3"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["error: --steps='1e3' must be an integer (write 1000); see 'samcli train "
                                        "--help'"]


# ---- names in the wrong case: refused, with the right spelling -----------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["--method", "SAM"], "optimizer.method='SAM' is unknown (did you mean sam?)"),
    (["--dataset", "MNIST1D"], "data.name='MNIST1D' is unknown (did you mean mnist1d?)"),
    (["--model", "MLP"], "model.name='MLP' is unknown (did you mean mlp?)"),
    (["--set", "optimizer.schedule=Cosine"], "optimizer.schedule='Cosine' is not allowed (did you mean cosine?)"),
    (["--dtype", "Float64"], "dtype='Float64' is not allowed (did you mean float64?)"),
    (["--set", "model.activation=ReLU"], "(did you mean relu?)"),
])
def test_a_name_in_the_wrong_case_is_refused_with_a_hint(tmp_path, args, fragment):
    out = tmp_path / "run"
    assert fragment in one_line_error(invoke(["train", *TINY, "--out", out, "--quiet", *args]))
    assert not out.exists()


def test_a_config_file_in_the_wrong_case_gets_the_hint_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optimizer:\n  schedule: Cosine\n")
    line = one_line_error(invoke(["train", path, "--quiet", "--out", tmp_path / "run"]))
    assert "optimizer.schedule='Cosine' is not allowed (did you mean cosine?); choose one of constant" in line
    with pytest.raises(ConfigError, match="did you mean sam"):       # never accepted silently
        TrainConfig.from_dict({"optimizer": {"method": "SAM"}})


# ---- echoed values cut ----------------------------------------------------------------------------

def test_a_yaml_alias_bomb_is_echoed_in_a_short_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(repr(yaml.safe_load(BOMB)["seed"])) > 1_000_000
    line = one_line_error(invoke(["train", path, "--quiet", "--out", tmp_path / "run"]))
    assert line.startswith("error: seed=[[1, 1, 1") and line.endswith("must be an integer")
    assert len(line) < 150, len(line)
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(yaml.safe_load(BOMB))
    assert len(str(err.value)) < 150


@pytest.mark.parametrize("value, expected", [
    ("fast", "'fast'"), (4, "4"), (1e-05, "1e-05"), ([1, 2], "[1, 2]"), (None, "None"), (True, "True"),
])
def test_short_values_are_echoed_as_repr(value, expected):
    assert short_repr(value) == expected == repr(value)


def test_long_values_are_cut_with_an_ellipsis():
    for value in ("x" * 500, list(range(1000)), {str(i): i for i in range(500)}, 10 ** 300):
        text = short_repr(value)
        assert len(text) <= 80 and "..." in text, text


def test_the_cli_caps_any_error_line(run_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise ConfigError("samples=" + "9" * 5000 + " is too many")
    monkeypatch.setattr(samcli.study.rundir, "measure_and_record", refuse)
    line = one_line_error(invoke(["sharpness", run_dir]))
    assert line.startswith("error: samples=999") and line.endswith("...")
    assert len(line) == len("error: ") + LINE_LIMIT


# ---- an error about a setting, in the words of the door it came through ------------------------------

def test_a_setting_error_speaks_python_and_command_line():
    err = SettingError("ascent_restart", "is unknown (did you mean ascent_restarts?)", 1)
    assert isinstance(err, ConfigError) and isinstance(err, ValueError)
    assert str(err) == "ascent_restart=1 is unknown (did you mean ascent_restarts?)"
    assert err.cli_message() == "--set ascent_restart=1 is unknown (did you mean ascent_restarts?)"
    assert err.cli_message({"ascent_restart": "--restarts"}) == "--restarts=1 is unknown (did you mean ascent_restarts?)"
    assert (err.key, err.value, err.problem) == ("ascent_restart", 1, "is unknown (did you mean ascent_restarts?)")
    assert str(SettingError("directions", "must be > 0 (without a value)")) == "directions must be > 0 (without a value)"
    assert str(SettingError("rho", "must be > 0", "x" * 300)).count("x") < 80
    assert ConfigError("plain").cli_message() == "plain"
    for sent in (err, SettingError("directions", "must be > 0")):      # from a run in another process
        back = pickle.loads(pickle.dumps(sent))
        assert type(back) is SettingError and str(back) == str(sent) and back.cli_message() == sent.cli_message()


@pytest.mark.parametrize("key, value, problem, args, expected", [
    ("ascent_restart", 1, "is unknown (did you mean ascent_restarts?)", ["--set", "ascent_restart=1"],
     "error: --set ascent_restart=1 is unknown (did you mean ascent_restarts?)"),
    ("rho", 0, "must be > 0", ["--rho", "0"], "error: --rho=0 must be > 0"),      # sharpness has --rho itself
])
def test_the_sharpness_command_renders_a_setting_error_in_its_words(run_dir, monkeypatch, key, value, problem,
                                                                     args, expected):
    def refuse(*args, **kwargs):
        raise SettingError(key, problem, value)
    monkeypatch.setattr(samcli.study.rundir, "measure_and_record", refuse)
    assert one_line_error(invoke(["sharpness", run_dir, *args])) == expected


# ---- one error path for every command: file-system errors and Ctrl-C --------------------------------

def test_a_file_system_error_names_the_path(run_dir, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/somewhere/sharpness.json")
    monkeypatch.setattr(samcli.study.rundir, "measure_and_record", denied)
    line = one_line_error(invoke(["sharpness", run_dir]))
    assert line == "error: cannot use /somewhere/sharpness.json: Permission denied; check the path and its permissions"


@pytest.mark.parametrize("command, target, words", [
    (["sharpness", "RUN"], (samcli.study.rundir, "measure_and_record"), "nothing was written"),
    (["measure-sharpness", "RUN"], (samcli.study.rundir, "measure_and_record"), "nothing was written"),
    (["compare", "STUDY"], (samcli.study, "compare"), "finished runs are kept"),
    (["reproduce", "quadratic"], (samcli.paper, "reproduce"), "each study that finished"),
])
def test_ctrl_c_is_a_warning_and_exit_130(run_dir, tmp_path, monkeypatch, command, target, words):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    module, name = target
    monkeypatch.setattr(module, name, interrupted)
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "seeds": [0], "base": {"device": "cpu"},
                                     "variants": [{"label": "GD", "optimizer.method": "sgd"}]}))
    args = [{"RUN": str(run_dir), "STUDY": str(study)}.get(a, a) for a in command]
    result = invoke(args)
    assert result.exit_code == 130, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: interrupted: ") and words in lines[0], lines
    assert result.stdout == "" and "Traceback" not in result.output


# ---- --version, -h, defaults in --help ---------------------------------------------------------------

def test_version():
    result = invoke(["--version"])
    assert result.exit_code == 0 and result.stdout == f"samcli {__version__}\n"


@pytest.mark.parametrize("command", [[], ["train"], ["sharpness"], ["measure-sharpness"], ["compare"], ["reproduce"]])
def test_dash_h_is_help_on_every_command(command):
    short, long = invoke([*command, "-h"]), invoke([*command, "--help"])
    assert short.exit_code == long.exit_code == 0
    assert short.stdout == long.stdout and "Usage:" in short.stdout and "-h" in short.stdout


def test_samcli_alone_prints_the_help_and_exits_2():
    result = invoke([])
    assert result.exit_code == 2 and result.stderr == ""
    assert all(name in result.stdout for name in ("train", "sharpness", "compare", "reproduce", "--version"))
    assert "measure-sharpness" not in result.stdout            # hidden: the original design's name


def test_help_shows_the_defaults():
    def help_text(command):
        result = invoke([command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        return result.stdout
    sharpness = help_text("sharpness")
    assert "Perturbation radius. [default: 0.05]" in sharpness and "[default: all]" in sharpness
    assert "[default: (worst ascent average)]" in sharpness
    train = help_text("train")
    for default in ("optimizer.lr. [default: (0.1)]", "[default: (2000)]", "[default: (sgd)]", "[default: (128)]",
                    "[default: (results/runs/<name>)]"):
        assert default in train, default
    assert "[default: local]" in help_text("compare") and "[default: results/paper]" in help_text("reproduce")


# ---- streams: results on stdout, the rest on stderr ---------------------------------------------------

def test_sharpness_prints_its_table_on_stdout(run_dir):
    result = invoke(["sharpness", run_dir, "--notions", "ascent", "--samples", "8"])
    assert result.exit_code == 0, result.output
    assert "sharpness at rho=0.05 on 8 examples" in result.stdout and "R^Asc_rho" in result.stdout
    assert result.stderr.strip() == f"written to {run_dir / 'sharpness.json'}"
    as_json = invoke(["sharpness", run_dir, "--notions", "ascent", "--samples", "8", "--json"])
    assert json.loads(as_json.stdout)["examples"] == 8 and "written to" in as_json.stderr


def test_reproduce_prints_its_verdicts_on_stdout(tmp_path):
    result = invoke(["reproduce", "quadratic", "--quick", "--set", "steps=300", "--out", tmp_path])
    assert result.exit_code == 0, result.output
    assert "reproduce quadratic (quick)" in result.stdout and "PASS" in result.stdout
    assert f"-> {tmp_path / 'quadratic'}" in "".join(result.stderr.splitlines())
    assert "reproduce quadratic" not in result.stderr
