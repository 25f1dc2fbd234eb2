"""Where a study writes: its name is a word (never '.', '..' or a path), its directory holds one study
(another is refused unless --overwrite; the same one resumes), and symlinks never lead its reads or
writes out of it (a symlinked run directory, or one holding a symlink, is moved aside and trained
again; a symlinked runs/ is refused). Each bad input: exit code 2, one line on stderr, no finished
file changed."""
from __future__ import annotations

import os
import shutil
import sys

import pytest
import yaml
from typer.testing import CliRunner

import samcli
from samcli.cli import app
from samcli.study import StudyError, load_study, render_from
from study_helpers import assert_refused, file_states, tiny_study, tree_states, write_study


def invoke(*args):
    return CliRunner().invoke(app, ["compare", *map(str, args)])


def small(name: str = "tiny", **top) -> dict:
    raw = tiny_study(name=name, seeds=[0], steps=10, **top)
    raw["variants"] = raw["variants"][:2]
    return raw


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(sys.modules["samcli.train"], "train",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))


@pytest.mark.parametrize("name", [".", "..", "a/b", "../up", "/abs", "a\\b", ".hidden", "-dash"])
def test_a_study_name_is_a_word(tmp_path, monkeypatch, no_training, name):
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path / "s.yaml", small(name))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_refused(invoke(path), "name=", "must be a word")        # default --out: results/studies/<name>
    assert sorted(p.name for p in tmp_path.iterdir()) == before     # nothing made, results/ included
    with pytest.raises(StudyError, match="must be a word"):
        load_study(small(name))


def test_names_that_are_words_are_kept():
    for name in ("ci", "cifar10-resnet", "v1.2", "_draft", "A_b-3"):
        assert load_study(small(name)).name == name


def test_a_file_name_that_is_no_word_is_refused_as_the_name(tmp_path):
    path = write_study(tmp_path / "..yaml", {k: v for k, v in small().items() if k != "name"})   # stem '.'
    assert_refused(invoke(path, "--out", tmp_path / "study"), "name='.'")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("paths") / "study"
    samcli.compare(small("first"), out=out)
    return out


def test_another_study_in_a_study_directory_is_refused_unless_overwrite(finished, tmp_path):
    before = tree_states(finished)
    other = write_study(tmp_path / "other.yaml", small("second"))
    line = assert_refused(invoke(other, "--out", finished), f"study directory {finished}", "study 'first'",
                          "--overwrite")
    assert "'second'" in line
    assert tree_states(finished) == before
    with pytest.raises(samcli.config.SamcliError, match="holds study 'first'"):
        samcli.compare(small("second"), out=finished)
    assert tree_states(finished) == before

    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    result = invoke(other, "--out", copy, "--overwrite", "--quiet")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((copy / "study.yaml").read_text())["name"] == "second"
    runs = [d for d in (copy / "runs").iterdir() if d.is_dir()]
    for run_dir in runs:                      # same configs, so the runs were reused as they were
        assert file_states(run_dir) == file_states(finished / "runs" / run_dir.name)
    assert render_from(copy).name == "second"


def test_the_same_study_resumes(finished):
    before = {d.name: file_states(d) for d in (finished / "runs").iterdir()}
    result = invoke(write_study(finished.parent / "first.yaml", small("first")), "--out", finished, "--quiet")
    assert result.exit_code == 0, result.output
    assert {d.name: file_states(d) for d in (finished / "runs").iterdir()} == before


def test_an_unreadable_study_file_in_the_directory_is_refused(finished, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    (copy / "study.yaml").write_text("{unbalanced")
    before = tree_states(copy)
    assert_refused(invoke(write_study(tmp_path / "s.yaml", small("first")), "--out", copy),
                   "study.yaml that cannot be read")
    assert tree_states(copy) == before


def _linked_copy(finished, tmp_path, link_file: bool):
    """A copy of the study whose first run directory is a symlink to a run outside it (or, with
    `link_file`, a real directory whose checkpoint is a symlink to one outside)."""
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    run_dir = sorted(d for d in (copy / "runs").iterdir())[0]
    outside = tmp_path / "outside" / run_dir.name
    shutil.copytree(run_dir, outside)
    if link_file:
        (run_dir / "checkpoint.pt").unlink()
        (run_dir / "checkpoint.pt").symlink_to(outside / "checkpoint.pt")
    else:
        shutil.rmtree(run_dir)
        run_dir.symlink_to(outside, target_is_directory=True)
    return copy, run_dir, outside


@pytest.mark.parametrize("link_file", [False, True], ids=["run-directory", "file-in-it"])
def test_a_symlink_in_runs_is_moved_aside_and_retrained(finished, tmp_path, link_file):
    copy, run_dir, outside = _linked_copy(finished, tmp_path, link_file)
    before = tree_states(outside.parent)
    shown = render_from(copy)                 # --from reads nothing through it: the run is missing
    assert any("symlink" in note and "shown as missing" in note for note in shown.notes), shown.notes
    result = samcli.compare(small("first"), out=copy)
    assert any(f"{run_dir.name} not trusted" in n and "symlink" in n for n in result.notes), result.notes
    assert tree_states(outside.parent) == before           # nothing outside read-modified or written
    assert run_dir.is_dir() and not run_dir.is_symlink() and (run_dir / "sharpness.json").is_file()
    aside = run_dir.with_name(run_dir.name + ".stale-1")
    assert aside.is_symlink() if not link_file else (aside / "checkpoint.pt").is_symlink()
    assert file_states(run_dir).keys() == file_states(finished / "runs" / run_dir.name).keys()
    assert result.table.loc[:, "completed"].tolist() == [1, 1]


def test_a_symlinked_runs_directory_is_refused(finished, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    shutil.move(str(copy / "runs"), str(tmp_path / "elsewhere"))
    os.symlink(tmp_path / "elsewhere", copy / "runs")
    before = tree_states(tmp_path / "elsewhere")
    assert_refused(invoke(write_study(tmp_path / "s.yaml", small("first")), "--out", copy), "runs is a symlink")
    assert tree_states(tmp_path / "elsewhere") == before
