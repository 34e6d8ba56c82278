"""The Python ``predict`` takes paths, PIL images and image tensors alike: the same pixels
give the same answer whichever way they come in (the oracle: the file on disk)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from test_evaluate_helpers import digits_run, torch_threads

from reslab.data import load_dataset
from reslab.errors import ConfigError
from reslab.evaluate import load_run, predict


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load_run(digits_run(tmp_path_factory))


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    """Six digits test images: uint8 (8, 8) arrays and the PNG files holding them."""
    split = load_dataset("digits", log=None, check=False).test
    folder = tmp_path_factory.mktemp("inputs")
    arrays = [split.images[i].squeeze().numpy() for i in range(6)]
    files = []
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i}.png")
        files.append(str(folder / f"{i}.png"))
    return arrays, files


def answers(preds):
    return [(p.label, round(p.prob, 6)) for p in preds]


def test_paths_pil_images_and_tensors_agree(run, pixels):
    arrays, files = pixels
    by_file = predict(run.model, files, topk=3, precision="fp32")
    assert all(p.ok for p in by_file)
    pil = [Image.fromarray(a) for a in arrays]
    uint8 = [torch.from_numpy(a)[None] for a in arrays]  # (1, 8, 8) uint8
    as_float = [t.float() / 255 for t in uint8]  # (1, 8, 8) in 0..1
    batch = torch.stack(uint8)  # (6, 1, 8, 8)
    for inputs in (pil, uint8, as_float, batch):
        got = predict(run.model, inputs, run.preprocess, run.classes, topk=3, precision="fp32")
        assert answers(got) == answers(by_file)
    single = predict(run.model, pil[0], precision="fp32")
    assert answers(single) == answers(by_file[:1]) and single[0].path == "<image 0>"
    mixed = predict(run.model, [files[0], pil[1], uint8[2]], precision="fp32")
    assert answers(mixed) == answers(by_file[:3])
    assert [p.path for p in mixed] == [files[0], "<image 1>", "<tensor 2>"]


def test_unusable_inputs_come_back_with_a_reason(run, pixels):
    arrays, _ = pixels
    normalised = (torch.from_numpy(arrays[0]).float()[None] - 128) / 64  # not raw pixels
    preds = predict(run.model, [normalised, torch.zeros(8, 8), "no/such.png"], precision="fp32")
    assert [p.ok for p in preds] == [False, False, False]
    assert "0..1" in preds[0].error and "(C, H, W)" in preds[1].error
    assert "no such file" in preds[2].error
    with pytest.raises(ConfigError, match="received a int"):
        predict(run.model, [3])
