"""Grad-CAM: it must point at the evidence. A tiny ResNet learns to classify synthetic
images by the texture of one bright patch (stripes across, stripes down, checkerboard)
while a solid bright square of the same size, present in every image, carries no class
information; the heat map must peak on the patch, not on the distractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_evaluate_helpers import digits_run, torch_threads

import reslab
from reslab.cli.main import main
from reslab.errors import ConfigError
from reslab.evaluate import grad_cam

SIZE, PATCH = 24, 6


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):  # a tiny model: one thread is fastest, more only spin on a busy CPU
        yield


def make_images(n: int, gen: torch.Generator):
    """(x (n, 1, S, S) normalised, y (n,), patch corner (n, 2), distractor corner (n, 2))."""
    x = torch.rand(n, 1, SIZE, SIZE, generator=gen) * 0.2  # dim noise background
    y = torch.randint(0, 3, (n,), generator=gen)
    textures = torch.zeros(3, PATCH, PATCH)
    textures[0, ::2, :] = 1  # horizontal stripes
    textures[1, :, ::2] = 1  # vertical stripes
    textures[2, ::2, ::2] = textures[2, 1::2, 1::2] = 1  # checkerboard
    patch = torch.zeros(n, 2, dtype=torch.long)
    distractor = torch.zeros(n, 2, dtype=torch.long)
    for i in range(n):
        while True:  # the two squares never touch
            a = torch.randint(0, SIZE - PATCH + 1, (2,), generator=gen)
            b = torch.randint(0, SIZE - PATCH + 1, (2,), generator=gen)
            if (a - b).abs().max() >= PATCH + 2:
                break
        patch[i], distractor[i] = a, b
        x[i, 0, b[0] : b[0] + PATCH, b[1] : b[1] + PATCH] = 1.0
        x[i, 0, a[0] : a[0] + PATCH, a[1] : a[1] + PATCH] = 0.4 + 0.6 * textures[y[i]]
    return (x - 0.3) / 0.3, y, patch, distractor


@pytest.fixture(scope="module")
def patch_model():
    gen = torch.Generator().manual_seed(0)
    x_tr, y_tr, _, _ = make_images(512, gen)
    x_te, y_te, p_te, d_te = make_images(64, gen)
    torch.manual_seed(0)
    model = reslab.create_model("resnet20", num_classes=3, in_chans=1, widths=(8, 16, 32),
                                layers=(1, 1, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with torch_threads(1):
        for epoch in range(12):
            model.train()
            perm = torch.randperm(len(x_tr))
            for i in range(0, len(x_tr), 64):
                idx = perm[i : i + 64]
                loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                acc = (model(x_te).argmax(1) == y_te).double().mean().item()
            if epoch >= 3 and acc >= 0.95:
                break
    assert acc >= 0.9, f"the patch model did not learn (held-out accuracy {acc:.2f})"
    return model, x_te, y_te, p_te, d_te


def _peak_within(cams, corners, margin):
    flat = cams.flatten(1).argmax(1)
    r, c = flat // SIZE, flat % SIZE
    r0, c0 = corners[:, 0] - margin, corners[:, 1] - margin
    return (r >= r0) & (r < r0 + PATCH + 2 * margin) & (c >= c0) & (c < c0 + PATCH + 2 * margin)


def _mean_inside(cams, corners):
    return torch.stack([cams[i, r : r + PATCH, c : c + PATCH].mean()
                        for i, (r, c) in enumerate(corners.tolist())])


def test_grad_cam_peaks_on_the_planted_patch(patch_model):
    model, x, y, patch, distractor = patch_model
    cams = grad_cam(model, x)  # default layer: the last stage
    assert cams.shape == (64, SIZE, SIZE)
    assert cams.min() >= 0 and torch.allclose(cams.flatten(1).amax(1), torch.ones(64))
    # The last stage sees the image on a 4-pixel grid: allow half a cell around the patch.
    on_patch = _peak_within(cams, patch, margin=2).double().mean().item()
    on_distractor = _peak_within(cams, distractor, margin=2).double().mean().item()
    assert on_patch >= 0.8, f"peak on the patch in only {on_patch:.0%} of images"
    assert on_distractor <= 0.1
    # And the heat is on the patch rather than the equally bright distractor.
    assert (_mean_inside(cams, patch) > _mean_inside(cams, distractor)).double().mean() >= 0.9
    # The brightest pixel is no shortcut to this: it lands on the distractor as often as not.
    brightest = _peak_within(x[:, 0] + torch.rand(x[:, 0].shape) * 1e-3, patch, margin=2)
    assert brightest.double().mean() < on_patch


def test_grad_cam_equals_the_formula_via_the_model_interface(patch_model):
    """Oracle: Grad-CAM written out with forward_stages / forward_head, no hooks."""
    model, x, _, _, _ = patch_model
    x = x[:8]
    target = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    with torch.enable_grad():
        acts = model.forward_stages(x)[-1].detach().requires_grad_(True)  # (B, 32, 6, 6)
        logits = model.forward_head(model.final_norm(acts))
        (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), acts)
    cam = F.relu((g.mean((2, 3), keepdim=True) * acts).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    cam = cam / cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    ours = grad_cam(model, x, target_class=target)
    torch.testing.assert_close(ours, cam.detach(), rtol=1e-4, atol=1e-5)


def test_layer_selection_and_side_effects(patch_model):
    model, x, _, _, _ = patch_model
    model.zero_grad(set_to_none=True)
    model.train()
    for layer in ("layer1", "layer2", "layer3.0", "layer3"):
        cams = grad_cam(model, x[:4], target_class=1, layer=layer)
        assert cams.shape == (4, SIZE, SIZE) and torch.isfinite(cams).all()
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # no gradients left on weights
    model.eval()
    with pytest.raises(ConfigError, match="layer4.*not a module"):
        grad_cam(model, x[:2], layer="layer4")
    with pytest.raises(ConfigError, match="target_class"):
        grad_cam(model, x[:2], target_class=7)


def test_grad_cam_works_for_frozen_imagenet_models():
    """A frozen backbone (no weight needs a gradient) still gets heat maps, on every family."""
    torch.manual_seed(0)
    for name in ("resnet18", "preact_resnet18", "resnet18d"):
        model = reslab.create_model(name, num_classes=5).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        cams = grad_cam(model, torch.randn(2, 3, 64, 64), layer="layer4.1")
        assert cams.shape == (2, 64, 64) and torch.isfinite(cams).all()


def test_explain_cli_writes_overlays(tmp_path_factory, tmp_path, capsys):
    from reslab.data import load_dataset

    run = digits_run(tmp_path_factory)
    bundle = load_dataset("digits", log=None, check=False)
    for i in range(3):  # three test digits as PNGs under their class folders
        label = bundle.classes[int(bundle.test.labels[i])]
        (tmp_path / "imgs" / label).mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(bundle.test.images[i, 0].numpy())
        img.save(tmp_path / "imgs" / label / f"{i}.png")
    (tmp_path / "imgs" / "notes.png").write_bytes(b"not an image")
    out = tmp_path / "cams"
    rc = main(["explain", "--checkpoint", str(run), str(tmp_path / "imgs"), "--out", str(out),
               "--layer", "layer2"])
    text = capsys.readouterr().out
    assert rc == 0
    pngs = sorted(out.glob("*_gradcam.png"))
    assert len(pngs) == 3
    assert "skipped" in text and "notes.png" in text
    for p in pngs:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB")).astype(int)
        # The jet overlay adds colour to a grey digit: red and blue channels differ somewhere.
        assert np.abs(arr[..., 0] - arr[..., 2]).max() > 60
    rc = main(["explain", "--checkpoint", str(run), str(tmp_path / "imgs" / "notes.png"),
               "--out", str(out), "--class", "nine"])
    assert rc == 2 and "neither a class name nor an index" in capsys.readouterr().err
