"""load_image normalises every mode and EXIF orientation (checked against Pillow/NumPy
oracles); the fast tensor decoder agrees with it; eval_transform agrees with torchvision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision import transforms as T

from reslab.data import eval_transform, load_image
from reslab.data.images import load_image_tensor, normalize_mode, pil_to_uint8
from reslab.data.synthetic import _png_header_only, random_image
from reslab.data.transforms import make_preprocess
from reslab.errors import DataError


@pytest.fixture
def rgb():
    return random_image(np.random.default_rng(0), (40, 30))


def test_cmyk_and_palette_become_pillow_rgb(tmp_path, rgb):
    rgb.convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    rgb.convert("P").save(tmp_path / "p.png")
    for name in ("c.jpg", "p.png"):
        img = load_image(tmp_path / name, 3)
        ref = Image.open(tmp_path / name).convert("RGB")
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), np.asarray(ref))


def test_alpha_is_composited_over_white(tmp_path, rgb):
    arr = np.asarray(rgb.convert("RGBA")).copy()
    arr[:, :20, 3] = 0  # left half fully transparent
    arr[:, 20:, 3] = 128
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = np.asarray(load_image(tmp_path / "a.png")).astype(float)
    a = arr[..., 3:4] / 255.0
    ref = arr[..., :3] * a + 255 * (1 - a)  # "over" operator on a white background
    assert np.abs(out - ref).max() <= 1.0
    assert (out[:, :20] == 255).all()
    la = Image.fromarray(arr).convert("LA")
    la.save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png").mode == "L"


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64 * 16).reshape(16, 64) * 64).astype(np.uint16)  # 0..65472
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    out = np.asarray(load_image(tmp_path / "g16.png"))
    assert out.dtype == np.uint8 and out.max() > 250
    np.testing.assert_array_equal(out, np.clip(np.rint(ramp / 257.0), 0, 255).astype(np.uint8))


def test_16_bit_is_scaled_by_bit_depth_not_by_each_image_maximum(tmp_path):
    # two files hold the same stored value 250; only their brightest pixel differs
    dim = np.full((8, 8), 250, np.uint16)
    bright = dim.copy()
    bright[0, 0] = 65535
    Image.fromarray(dim).save(tmp_path / "dim.png")
    Image.fromarray(bright).save(tmp_path / "bright.png")
    assert Image.open(tmp_path / "dim.png").mode == "I;16"
    want = round(250 * 255 / 65535)  # 1: 250 of 65535 is nearly black, in every file
    for name in ("dim.png", "bright.png"):
        assert np.asarray(load_image(tmp_path / name))[4, 4] == want
        assert int(load_image_tensor(tmp_path / name, 1)[0, 4, 4]) == want
    assert np.asarray(load_image(tmp_path / "bright.png"))[0, 0] == 255
    # mode I (32-bit; older Pillow's 16-bit PNG): the same 16-bit scale
    as_i = Image.fromarray(dim.astype(np.int32))
    assert as_i.mode == "I" and np.asarray(normalize_mode(as_i))[4, 4] == want


def test_exif_orientation_is_applied(tmp_path, rgb):
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.save(tmp_path / "r.jpg", exif=exif, quality=95)
    img = load_image(tmp_path / "r.jpg")
    assert img.size == (30, 40)
    ref = ImageOps.exif_transpose(Image.open(tmp_path / "r.jpg"))
    assert np.array_equal(np.asarray(img), np.asarray(ref))
    fast = load_image_tensor(tmp_path / "r.jpg", 3)
    assert fast.shape == (3, 40, 30)
    assert (fast.int() - pil_to_uint8(img).int()).abs().max() <= 2  # libjpeg-turbo rounding


def test_grey_and_channel_conversion(tmp_path, rgb):
    rgb.save(tmp_path / "x.png")
    assert load_image(tmp_path / "x.png", 1).mode == "L"
    assert np.array_equal(np.asarray(load_image(tmp_path / "x.png", 1)), np.asarray(rgb.convert("L")))
    rgb.convert("L").save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").mode == "L" and load_image(tmp_path / "g.png", 3).mode == "RGB"
    assert load_image_tensor(tmp_path / "g.png", 3).shape == (3, 30, 40)


@pytest.mark.parametrize("content,match", [
    (b"", "empty"), (b"hello, not a picture", "not an image"), ("bomb", "decompression bomb"), ("trunc", "truncated"),
])  # fmt: skip
def test_unreadable_files_raise_data_error(tmp_path, rgb, content, match):
    path = tmp_path / "bad.jpg"
    if content == "bomb":
        path = tmp_path / "bomb.png"
        path.write_bytes(_png_header_only(30000, 30000))
    elif content == "trunc":
        rgb.save(path, quality=95)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_image(path)
    with pytest.raises(DataError):
        load_image_tensor(path, 3)


def test_tensor_decoder_agrees_with_pillow(tmp_path):
    big = random_image(np.random.default_rng(1), (640, 480))
    big.save(tmp_path / "big.jpg", quality=92)
    big.save(tmp_path / "big.png")
    png = load_image_tensor(tmp_path / "big.png", 3, target_size=224)
    assert torch.equal(png, pil_to_uint8(load_image(tmp_path / "big.png")))
    full = load_image_tensor(tmp_path / "big.jpg", 3)
    assert (full.int() - pil_to_uint8(load_image(tmp_path / "big.jpg")).int()).abs().max() <= 2
    draft = load_image_tensor(tmp_path / "big.jpg", 3, target_size=200)  # DCT-domain 1/2 decode
    assert draft.shape == (3, 240, 320)


def test_eval_transform_matches_torchvision_pipeline(rgb):
    pre = make_preprocess(24, 3, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3], resize=28)
    ours = eval_transform(pre)(rgb)
    ref = T.Compose([
        T.PILToTensor(), T.Resize(28, antialias=True), T.CenterCrop(24),
        T.ConvertImageDtype(torch.float32), T.Normalize(pre["mean"], pre["std"]),
    ])(rgb)  # fmt: skip
    assert ours.shape == (3, 24, 24)
    # torchvision's uint8 resize kernel and its float path may round a pixel differently:
    # allow one grey level (1/255 / std) and require near-identity on average
    level = 1 / 255 / min(pre["std"])
    assert float((ours - ref).abs().max()) <= level + 1e-5
    assert float((ours - ref).abs().mean()) < 0.25 * level
    grey = eval_transform(make_preprocess(24, 1, [0.5], [0.2], resize=28))(rgb)
    assert grey.shape == (1, 24, 24)
