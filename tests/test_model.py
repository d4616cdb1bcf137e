"""dualcodec.model: forward pass, side-stream bytes, model files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from dualcodec.config import ModelConfig
from dualcodec.data import crops_to_planes
from dualcodec.errors import DualcodecError
from dualcodec.model import (
    MODEL_VERSION,
    BaseLayerOutput,
    DualLayerModel,
    load_model,
    resolve_model_path,
    save_model,
)
from dualcodec.nets.common import bicubic_down, bicubic_up, from_444, to_444
from helpers import TINY_CONFIG, TINY_LMBDA, build_tiny_model

TINY = ModelConfig(**TINY_CONFIG)


def fake_base(y_lr: torch.Tensor, uv_lr: torch.Tensor) -> BaseLayerOutput:
    """A lossless base layer that costs nothing."""
    return BaseLayerOutput(y_lr, uv_lr, torch.zeros(y_lr.shape[0]))


def _images(b=2, h=64, w=48, seed=0) -> torch.Tensor:
    """Smooth uint8 R'G'B' crops ``[B,3,H,W]``, as the training stream yields them."""
    gen = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(b, 3, h // 8, w // 8, generator=gen), size=(h, w),
                                             mode="bilinear", align_corners=False)
    return (smooth * 255).round().to(torch.uint8)


def _planes(b=2, h=64, w=48, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_images` as unit-scale 4:2:0 planes ``y`` ``[B,1,H,W]``, ``uv`` ``[B,2,H/2,W/2]``."""
    return crops_to_planes(_images(b, h, w, seed))


def test_forward_shapes():
    torch.manual_seed(0)
    model = DualLayerModel(TINY)
    y, uv = _planes()
    out = model(y, uv, fake_base)
    assert out.y_hat.shape == (2, 1, 64, 48) and out.uv_hat.shape == (2, 2, 32, 24)
    assert out.y_lr.shape == (2, 1, 32, 24) and out.uv_lr.shape == (2, 2, 16, 12)
    assert out.side_bits.shape == out.base_bits.shape == (2,)
    assert torch.isfinite(out.side_bits).all() and (out.side_bits > 0).all()
    assert torch.equal(out.base_bits, torch.zeros(2))


def test_forward_scale_4_and_sizes_not_multiple_of_the_latent_stride():
    torch.manual_seed(0)
    model = DualLayerModel(ModelConfig(scale=4, **TINY_CONFIG))
    y, uv = _planes(b=1, h=40, w=56)  # low resolution 10x14 (chroma 5x7): not a multiple of 8
    out = model(y, uv, fake_base)
    assert out.y_lr.shape == (1, 1, 10, 14) and out.uv_lr.shape == (1, 2, 5, 7)
    assert out.y_hat.shape == (1, 1, 40, 56) and out.uv_hat.shape == (1, 2, 20, 28)
    assert torch.isfinite(out.side_bits).all() and (out.side_bits > 0).all()


def test_forward_without_side_stream_has_zero_side_bits():
    model = DualLayerModel(ModelConfig(side_stream=False, downsampler="bicubic", **TINY_CONFIG))
    assert not model.has_side_stream
    out = model(*_planes(), fake_base)
    assert torch.equal(out.side_bits, torch.zeros(2))
    assert out.y_hat.shape == (2, 1, 64, 48) and out.uv_hat.shape == (2, 2, 32, 24)


def test_entropy_model_stays_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    model = DualLayerModel(TINY)
    y, uv = _planes()
    reference = model(y, uv, fake_base).side_bits
    torch.manual_seed(0)
    model = DualLayerModel(TINY)
    seen = {}
    model.entropy_bottleneck.register_forward_hook(lambda m, args, out: seen.update(w=args[0], w_hat=out[0]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(y, uv, fake_base)
    assert out.y_hat.dtype == out.uv_hat.dtype == torch.bfloat16  # the networks did run in bf16
    assert seen["w"].dtype == seen["w_hat"].dtype == torch.float32
    assert torch.isfinite(out.side_bits).all()
    assert torch.allclose(out.side_bits, reference, rtol=0.1)  # bits from bf16 features, fp32 likelihoods


def test_forward_is_differentiable_end_to_end():
    model, _ = build_tiny_model(seed=0)
    y, uv = _planes()
    out = model(y, uv, fake_base)
    loss = (out.y_hat - y).abs().mean() + (out.uv_hat - uv).abs().mean() + 1e-3 * out.side_bits.mean()
    loss.backward()
    for module in (model.downsampler, model.g_a, model.g_s, model.upsampler):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), module.__class__.__name__


def test_base_layer_sees_the_downsampled_frame():
    seen = {}

    def spy(y_lr, uv_lr):
        seen["y_lr"], seen["uv_lr"] = y_lr, uv_lr
        return BaseLayerOutput(y_lr * 0 + 0.25, uv_lr * 0 + 0.75, torch.full((y_lr.shape[0],), 123.0))

    model = DualLayerModel(TINY)
    # What the base layer returns is what the side analysis and the upsampler see.
    model.g_a.register_forward_hook(lambda m, args, out: seen.update(analysis=args[1]))
    model.upsampler.register_forward_hook(lambda m, args, out: seen.update(upsampler=args[0]))
    out = model(*_planes(), spy)
    assert seen["y_lr"] is out.y_lr and seen["uv_lr"] is out.uv_lr
    assert torch.equal(out.base_bits, torch.full((2,), 123.0))
    decoded = torch.tensor([0.25, 0.75, 0.75]).view(1, 3, 1, 1)
    assert torch.equal(seen["upsampler"], decoded.expand(2, 3, 32, 24))
    assert torch.equal(seen["analysis"], decoded.expand(2, 3, 32, 24))


def test_untrained_downsampler_is_bicubic_per_plane():
    model = DualLayerModel(TINY)
    assert model.downsampler is not None  # the learned one, its residual still zero
    y, uv = _planes()
    y_lr, uv_lr = model.downsample(y, uv)
    assert torch.allclose(y_lr, bicubic_down(y, 2), atol=1e-6)
    assert torch.allclose(uv_lr, bicubic_down(uv, 2), atol=1e-6)


def test_bicubic_downsampler_is_bicubic_per_plane():
    model = DualLayerModel(ModelConfig(downsampler="bicubic", **TINY_CONFIG))
    assert model.downsampler is None
    y, uv = _planes()
    y_lr, uv_lr = model.downsample(y, uv)
    assert torch.equal(y_lr, bicubic_down(y, 2)) and torch.equal(uv_lr, bicubic_down(uv, 2))


def _lr_planes(b=2, h=16, w=24, seed=3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, h, w, generator=gen), 0.5 + 0.2 * (torch.rand(b, 2, h // 2, w // 2, generator=gen) - 0.5)


@pytest.mark.parametrize("scale", [2, 4])
def test_untrained_upsampler_is_bicubic_in_the_interior(scale):
    torch.manual_seed(0)
    model = DualLayerModel(ModelConfig(scale=scale, **TINY_CONFIG))
    y_lr_hat, uv_lr_hat = _lr_planes()
    w_hat = torch.randn(2, TINY.latent_channels, 2, 3)  # the side features cannot matter yet
    y_hat, uv_hat = model.upsample(y_lr_hat, uv_lr_hat, w_hat)
    assert y_hat.shape == (2, 1, 16 * scale, 24 * scale) and uv_hat.shape == (2, 2, 8 * scale, 12 * scale)
    border = 2 * scale
    # Luma: bicubic upsampling of the decoded luma.
    ref_y = bicubic_up(y_lr_hat, scale)
    assert (y_hat - ref_y)[..., border:-border, border:-border].abs().max() < 1e-5
    # Chroma: bicubic on luma's grid (to_444), then back to 4:2:0 (from_444).
    _, ref_uv = from_444(bicubic_up(to_444(y_lr_hat, uv_lr_hat), scale))
    half = border // 2
    assert (uv_hat - ref_uv)[..., half:-half, half:-half].abs().max() < 1e-5
    assert (uv_hat - bicubic_up(uv_lr_hat, scale)).abs().max() > 1e-3  # not bicubic on the chroma grid


def test_trained_upsampler_is_not_bicubic():
    model, _ = build_tiny_model(seed=0)  # perturbed kernel predictor
    y_lr_hat, uv_lr_hat = _lr_planes(b=1, h=16, w=16)
    y_hat, _ = model.upsample(y_lr_hat, uv_lr_hat, None)
    assert (y_hat - bicubic_up(y_lr_hat, 2)).abs().max() > 1e-3


def test_to_444_upsamples_chroma_bilinearly_to_the_luma_grid():
    y, uv = _lr_planes(b=2, h=12, w=10)
    x = to_444(y, uv)
    assert x.shape == (2, 3, 12, 10)
    assert torch.equal(x[:, :1], y)
    expected = torch.nn.functional.interpolate(uv, size=(12, 10), mode="bilinear", align_corners=False)
    assert torch.allclose(x[:, 1:], expected, atol=1e-7)


def test_from_444_averages_chroma_over_2x2_blocks():
    x = torch.rand(2, 3, 8, 6, generator=torch.Generator().manual_seed(5))
    y, uv = from_444(x)
    assert torch.equal(y, x[:, :1]) and uv.shape == (2, 2, 4, 3)
    manual = (x[:, 1:, 0::2, 0::2] + x[:, 1:, 0::2, 1::2] + x[:, 1:, 1::2, 0::2] + x[:, 1:, 1::2, 1::2]) / 4
    assert torch.allclose(uv, manual, atol=1e-7)


def test_from_444_of_to_444_keeps_luma_and_constant_chroma_exactly():
    y, uv = _lr_planes(b=1, h=16, w=24)
    y_back, uv_back = from_444(to_444(y, uv))
    assert torch.equal(y_back, y)
    # Varying chroma is smoothed by the bilinear/box pair ...
    assert 0 < (uv_back - uv).abs().max() < 0.1
    # ... constant chroma comes back exactly.
    flat = torch.empty(1, 2, 8, 12)
    flat[:, 0], flat[:, 1] = 0.3125, 0.6875
    y_back, uv_back = from_444(to_444(y, flat))
    assert torch.equal(y_back, y) and torch.equal(uv_back, flat)


def test_save_load_round_trip(tmp_path):
    model, config = build_tiny_model(seed=0)
    path = tmp_path / "sub" / "m.pt"
    fingerprint = save_model(model, config, "tiny", path, lmbda=TINY_LMBDA)
    assert path.is_file() and not list(path.parent.glob("*.partial*"))
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    loaded = load_model(str(path))
    assert loaded.fingerprint == fingerprint and loaded.name == "tiny" and loaded.config == config
    assert loaded.lmbda == TINY_LMBDA
    assert not loaded.model.training
    model.eval()
    y, uv = _planes()
    with torch.no_grad():
        a = model(y, uv, fake_base)
        b = loaded.model(y, uv, fake_base)
    assert torch.equal(a.y_hat, b.y_hat) and torch.equal(a.uv_hat, b.uv_hat)
    assert torch.equal(a.side_bits, b.side_bits)
    # Saving the loaded model again gives the same fingerprint: it covers weights and config.
    again = save_model(loaded.model, loaded.config, "tiny", tmp_path / "again.pt", lmbda=TINY_LMBDA)
    assert again == fingerprint


def test_fingerprint_depends_on_weights_and_config(tmp_path):
    model, config = build_tiny_model(seed=0)
    other, _ = build_tiny_model(seed=1)
    a = save_model(model, config, "a", tmp_path / "a.pt", lmbda=TINY_LMBDA)
    b = save_model(other, config, "a", tmp_path / "b.pt", lmbda=TINY_LMBDA)
    assert a != b
    # Same weights, a config that differs in a field the weights do not show.
    changed = ModelConfig(down_bound=0.3, **TINY_CONFIG)
    c = save_model(model, changed, "a", tmp_path / "c.pt", lmbda=TINY_LMBDA)
    assert c != a


@pytest.fixture()
def saved(tmp_path):
    model, config = build_tiny_model(seed=0)
    path = tmp_path / "m.pt"
    save_model(model, config, "tiny", path, lmbda=TINY_LMBDA)
    return path


@pytest.mark.parametrize("where", [0.2, 0.5, 0.8, 0.97])
def test_damaged_file_is_rejected(saved, where):
    data = bytearray(saved.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0xFF
    data[i + 1] ^= 0x5A
    saved.write_bytes(bytes(data))
    with pytest.raises(DualcodecError, match="m.pt"):
        load_model(str(saved))


def test_truncated_file_is_rejected(saved):
    saved.write_bytes(saved.read_bytes()[:1000])
    with pytest.raises(DualcodecError, match="cannot read model file"):
        load_model(str(saved))


def test_other_torch_file_is_rejected(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(DualcodecError, match="not a dualcodec model file"):
        load_model(str(path))


def _set_version(saved, version: int) -> None:
    payload = torch.load(saved, weights_only=True)
    payload["version"] = version
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    saved.write_bytes(buffer.getvalue())


def test_future_version_is_rejected(saved):
    _set_version(saved, 99)
    with pytest.raises(DualcodecError, match="version 99"):
        load_model(str(saved))


def test_version_1_model_file_is_refused_with_a_message(saved):
    _set_version(saved, 1)
    with pytest.raises(DualcodecError, match="version 1") as info:
        load_model(str(saved))
    assert "R'G'B'" in str(info.value) and "m.pt" in str(info.value) and "retrain" in str(info.value)


def test_unknown_model_name(tmp_path):
    with pytest.raises(DualcodecError, match="no model named or at"):
        resolve_model_path(str(tmp_path / "missing.pt"))
    with pytest.raises(DualcodecError):
        load_model("no-such-built-in-model")


def test_compress_decompress_side_reproduces_w_hat(saved):
    model = load_model(str(saved)).model  # save_model ran update(): coding tables are ready
    y, uv = _planes(b=2, h=64, w=48, seed=1)
    y_lr_hat, uv_lr_hat = (p.clamp(0, 1) for p in model.downsample(y, uv))
    strings = model.compress_side(y, uv, y_lr_hat, uv_lr_hat)
    assert len(strings) == 2 and all(isinstance(s, bytes) and len(s) > 0 for s in strings)
    w_hat = model.decompress_side(strings, 32, 24)
    assert w_hat.shape == (2, TINY.latent_channels, 4, 3)
    with torch.no_grad():
        w = model._analysis(y, uv, y_lr_hat, uv_lr_hat)
        reference, _ = model.entropy_bottleneck(w, training=False)
    assert reference.abs().max() > 0  # the latents carry something
    assert torch.equal(w_hat, reference)
    # Per frame: the strings are independent.
    assert torch.equal(model.decompress_side(strings[1:], 32, 24), reference[1:])


def test_side_stream_size_follows_the_latents(saved):
    model = load_model(str(saved)).model
    big = _planes(b=1, h=128, w=128, seed=2)
    small = _planes(b=1, h=32, w=32, seed=2)
    n_big = len(model.compress_side(*big, *model.downsample(*big))[0])
    n_small = len(model.compress_side(*small, *model.downsample(*small))[0])
    assert n_big > n_small


def test_latent_size_rounds_up():
    model = DualLayerModel(TINY)
    assert model.latent_size(16, 24) == (2, 3)
    assert model.latent_size(17, 1) == (3, 1)


def test_model_file_is_self_describing(saved):
    payload = torch.load(saved, weights_only=True)
    assert payload["format"] == "dualcodec-model" and payload["version"] == MODEL_VERSION == 2
    assert payload["config"]["up_width"] == 8
    # The coding tables are in the file (update() ran before saving).
    assert any(k.endswith("_quantized_cdf") and v.numel() > 0 for k, v in payload["state_dict"].items())


def test_builtin_dir_resolution(tmp_path, monkeypatch):
    import dualcodec.model as m

    model, config = build_tiny_model(seed=0)
    save_model(model, config, "mine", tmp_path / "mine.pt", lmbda=TINY_LMBDA)
    monkeypatch.setattr(m, "BUILTIN_DIR", tmp_path)
    assert resolve_model_path("mine") == tmp_path / "mine.pt"
    assert load_model("mine").name == "mine"
    with pytest.raises(DualcodecError, match="built-in: mine"):
        resolve_model_path("other")


def test_default_model_loads(default_model_path):
    loaded = load_model("default")
    assert loaded.config.scale in (2, 4)
    assert Path(resolve_model_path("default")) == default_model_path
