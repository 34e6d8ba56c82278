"""Runtime messages that point the right way (issue 17) and the one batch-size rule
(issue 19): BatchNorm on one image is refused before training, a NaN names the causes
this run makes likely, ``data.workers`` is capped to the cores with one note."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reslab.config import load_config
from reslab.data import load_dataset
from reslab.engine import Callback, NonFiniteLossError, fit
from reslab.engine.batch_size import batch_sizes
from reslab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", check=False, log=None)


def _cfg(tmp_path: Path, name: str = "run", data: dict | None = None, **over):
    base = {"data": {"source": "digits", "batch_size": 32, "limit_train": 64, "limit_val": 32, **(data or {})},
            "model": {"name": "resnet20"}, "epochs": 1, "threads": 1, "device": "cpu", "eval_test": False,
            "out": str(tmp_path / name)}  # fmt: skip
    return load_config(None, {**base, **over})


def test_resnet18_on_batches_of_one_is_refused_before_training(tmp_path, digits):
    cfg = _cfg(tmp_path, data={"batch_size": 1}, model={"name": "resnet18"})
    with pytest.raises(ConfigError, match=r"BatchNorm on batches of 1 image.*norm_layer=groupnorm"):
        fit(cfg, data=digits)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    # with accumulation the micro-batch is what counts: 4 / 4 is one image again
    with pytest.raises(ConfigError, match="batches of 1 image"):
        fit(_cfg(tmp_path, "accum", data={"batch_size": 4}, accum_steps=4), data=digits)
    # GroupNorm does not depend on the batch: allowed
    fit(_cfg(tmp_path, "gn", data={"batch_size": 1, "limit_train": 4}, model={"norm_layer": "groupnorm"}), data=digits)


class Poison(Callback):
    def on_epoch_start(self, trainer, epoch):
        with torch.no_grad():
            trainer.model.conv1.weight.fill_(float("nan"))


def test_a_nan_with_tiny_batchnorm_batches_names_them_first(tmp_path, digits):
    cfg = _cfg(tmp_path, data={"batch_size": 2, "limit_train": 8}, log_every=1)
    with pytest.raises(NonFiniteLossError) as err:
        fit(cfg, data=digits, callbacks=[Poison()])
    causes = str(err.value).split("Likely causes, most likely first:")[1]
    assert causes.index("BatchNorm over batches of 2") < causes.index("learning rate") < causes.index("bad data")
    assert "reslab check digits" in causes
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "warning: BatchNorm will normalise over batches of 2 images" in log


def test_workers_are_capped_to_the_cores_with_one_note_in_the_run_log(tmp_path):
    # streamed folders decode in worker processes: more workers than cores only queue, and
    # the loader's note lands in the run's own log.txt
    from reslab.data import write_digits_folder

    folder = tmp_path / "digits_folder"
    write_digits_folder(folder, per_class=6, seed=0, size=16)
    cfg = _cfg(tmp_path, data={"source": str(folder), "workers": 64, "in_memory": False,
                               "batch_size": 16}, precision="fp32")  # fmt: skip
    fit(cfg)
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.count("note: workers=64 is more than the") == 1


def test_batch_sizes_is_the_one_reading_of_the_batch():
    cfg = load_config(None, {"data": {"batch_size": 64}, "accum_steps": 2})
    b = batch_sizes(cfg, world_size=4)
    assert (b.global_batch, b.micro, b.eval, b.steps_per_epoch(9)) == (64, 8, 32, 5)
    with pytest.raises(ConfigError, match=r"processes x accum_steps = 3 x 2; e.g. use data.batch_size=60"):
        batch_sizes(cfg, world_size=3)


def test_out_inside_the_data_folder_is_refused_naming_both_before_any_write(tmp_path):
    from reslab.data import write_digits_folder

    folder = tmp_path / "photos"
    write_digits_folder(folder, per_class=5, seed=0, size=16)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    cfg = _cfg(tmp_path, data={"source": str(folder)}, out=str(folder / "run"))
    with pytest.raises(ConfigError, match=r"is inside the data folder .*Choose an --out outside"):
        fit(cfg)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
