"""Broken weight files get a WeightsError that says what the file is and what to do, never a
traceback and never "pickled objects" for a file that holds none: empty, HTML, JSON, text,
truncated zip, truncated safetensors, a pickle renamed .safetensors, another architecture."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from reslab.errors import WeightsError
from reslab.files import save_checkpoint
from reslab.models import create_model
from reslab.models.checkpoint import model_from_checkpoint
from reslab.models.pretrained import load_pretrained, weights_info
from reslab.models.weights_file import check_weights_file, read_weights_file


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good files and broken ones, all from one resnet20."""
    d = tmp_path_factory.mktemp("weights")
    model = create_model("resnet20")
    sd = model.state_dict()
    torch.save(sd, d / "good.pt")
    save_file(sd, str(d / "good.safetensors"))
    save_checkpoint({"model": sd, "model_args": dict(model.model_args)}, d / "run.pt")
    zip_bytes, st_bytes = (d / "good.pt").read_bytes(), (d / "good.safetensors").read_bytes()
    broken = {
        "page.pt": b"<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>",
        "empty.pt": b"",
        "data.pt": b'{"model": "resnet20"}',
        "notes.pt": b"these are not weights\n",
        "cut.pt": zip_bytes[: len(zip_bytes) // 2],
        "cut.safetensors": st_bytes[: len(st_bytes) // 2],
        "cuthead.safetensors": st_bytes[:40],
        "renamed.safetensors": zip_bytes,
    }
    for name, data in broken.items():
        (d / name).write_bytes(data)
    return d


EXPECT = [
    ("page.pt", "HTML"), ("empty.pt", "empty (0 bytes)"), ("data.pt", "JSON"),
    ("notes.pt", "text file"), ("cut.pt", "truncated or corrupted PyTorch file"),
    ("cut.safetensors", "truncated .safetensors file"),
    ("cuthead.safetensors", "truncated .safetensors file"),
    ("renamed.safetensors", "named .safetensors but holds a PyTorch pickle file"),
]
READERS = {
    "read_weights_file": read_weights_file,
    "load_pretrained": lambda p: load_pretrained(create_model("resnet20"), p, log=None),
    "weights_info": weights_info,
    "model_from_checkpoint": model_from_checkpoint,
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name, says", EXPECT)
def test_each_broken_file_gets_a_message(files, reader, name, says):
    with pytest.raises(WeightsError) as err:
        READERS[reader](files / name)
    msg = str(err.value)
    assert says in msg and str(files / name) in msg
    assert "pickled Python objects" not in msg  # none of these holds any
    assert "again" in msg or "Rename" in msg  # what to do


def test_good_files_still_load(files):
    for name in ("good.pt", "good.safetensors", "run.pt"):
        assert check_weights_file(files / name) in ("torch", "safetensors")
        assert load_pretrained(create_model("resnet20"), files / name, log=None).loaded
    assert model_from_checkpoint(files / "run.pt").model_args["name"] == "resnet20"
    with pytest.raises(WeightsError, match="no model_args.*load_pretrained"):
        model_from_checkpoint(files / "good.safetensors")


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_code_carrying_pickle_renamed_safetensors_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"model": create_model("resnet20").state_dict(), "x": _Payload(marker)},
               tmp_path / "evil.safetensors")
    (tmp_path / "evil_legacy.pt").write_bytes(pickle.dumps(_Payload(marker)))
    for name in ("evil.safetensors", "evil_legacy.pt"):
        for reader in READERS.values():
            with pytest.raises(WeightsError):
                reader(tmp_path / name)
    assert not marker.exists()


def test_a_checkpoint_of_another_architecture(tmp_path):
    state = {"model": create_model("resnet32").state_dict(),
             "model_args": {"name": "resnet20", "num_classes": 10, "in_chans": 3}}
    save_checkpoint(state, tmp_path / "mixed.pt")
    with pytest.raises(WeightsError, match="'resnet20'.*do not fit.*layer1.3") as err:
        model_from_checkpoint(tmp_path / "mixed.pt")
    assert str(tmp_path / "mixed.pt") in str(err.value)
    with pytest.raises(WeightsError, match="do not fit this model"):
        load_pretrained(create_model("resnet20"), tmp_path / "mixed.pt", log=None)
