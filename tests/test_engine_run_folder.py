"""The run folder as a trusted tool keeps it (issue 17): a marker makes a folder a run, a
folder of the user's own files is never written into, a lock refuses a second writer by
pid, and a refused ``--resume`` leaves the folder byte-for-byte as it was."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reslab.cli.main import main
from reslab.config import load_config, resume_changes
from reslab.engine import fit
from reslab.errors import ConfigError
from reslab.run_folder import MARKER, RunFolder

FAST = ["data.check=false", "data.limit_train=128", "data.limit_val=64", "threads=1"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    code = main(["train", "--data", "digits", "--model", "resnet20", "--epochs", "1", "--batch-size", "32",
                 "--out", str(run), "--device", "cpu", *FAST])  # fmt: skip
    assert code == 0
    return run


def test_a_run_folder_carries_the_marker(trained_run):
    assert (trained_run / MARKER).is_file() and RunFolder(trained_run).is_run()


def test_a_folder_of_the_users_own_files_is_refused_untouched(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name, text in (("config.yaml", "my: own\n"), ("summary.json", "{}"), ("metrics.csv", "a,b\n"),
                       ("model.safetensors", "weights")):  # fmt: skip
        (mine / name).write_text(text)
    before = _snapshot(mine)
    cfg = load_config(None, {"data": {"source": "digits"}, "out": str(mine), "overwrite": True})
    with pytest.raises(ConfigError, match=r"not empty and is not a reslab run folder.*config\.yaml"):
        fit(cfg)
    assert _snapshot(mine) == before and sorted(p.name for p in mine.iterdir()) == sorted(before)


def test_a_second_writer_is_refused_naming_the_holders_pid(tmp_path):
    run = RunFolder(tmp_path / "busy").prepare(resume=False, overwrite=False)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from reslab.run_folder import RunFolder
        with RunFolder({str(run.path)!r}).lock():
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = load_config(None, {"data": {"source": "digits"}, "out": str(run.path)})
        with pytest.raises(ConfigError, match=f"another reslab process \\(pid {holder.pid}\\)"):
            fit(cfg)
    finally:
        holder.kill()
        holder.wait()
    with run.lock():  # the kernel dropped the dead holder's lock
        pass


def test_a_refused_resume_leaves_the_folder_byte_identical(trained_run, capsys):
    before = _snapshot(trained_run)
    capsys.readouterr()
    code = main(["train", "--resume", str(trained_run), "--model", "resnet32", "--batch-size", "16"])
    err = capsys.readouterr().err
    assert code == 2
    assert "model.name: stored 'resnet20', requested 'resnet32'" in err
    assert "data.batch_size: stored 32, requested 16" in err and "epochs" in err
    assert _snapshot(trained_run) == before
    # and the run is not broken: a plain resume with more epochs continues it
    assert main(["train", "--resume", str(trained_run), "--epochs", "2"]) == 0
    assert "epochs: 1 -> 2" in capsys.readouterr().out


def test_resume_changes_sorts_allowed_from_refused():
    old = load_config(None, {"epochs": 3, "data": {"source": "digits"}}).to_dict()
    new = load_config(None, {"epochs": 5, "early_stop": 2, "data": {"source": "digits", "workers": 4},
                             "optim": {"lr": 0.2}}).to_dict()  # fmt: skip
    allowed, refused = resume_changes(old, new)
    assert allowed == ["data.workers: None -> 4", "early_stop.patience: 0 -> 2", "epochs: 3 -> 5"]
    assert refused == ["optim.lr: stored 0.1, requested 0.2"]


def test_a_run_from_before_the_marker_still_counts_as_a_run(tmp_path):
    old = RunFolder(tmp_path / "old")
    old.checkpoints.mkdir(parents=True)
    old.last.write_bytes(b"a checkpoint")
    old.config.write_text("epochs: 1\n")
    assert old.is_run() and not old.marker.exists()
    old.check_writable(resume=True, overwrite=False)  # resumable
    with pytest.raises(ConfigError, match="already holds a run"):
        old.check_writable(resume=False, overwrite=False)
    old.create()
    assert old.marker.exists() and old.last.read_bytes() == b"a checkpoint"
