"""dualcodec.model: forward pass, the side stream through the model, distortion per block, model files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from dualcodec.config import ModelConfig
from dualcodec.data import TRAINING_FORMAT, crops_to_planes
from dualcodec.errors import DualcodecError
from dualcodec.model import (
    MODEL_VERSION,
    BaseLayerOutput,
    DualLayerModel,
    block_distortion,
    load_model,
    plane_distortion,
    resolve_model_path,
    save_model,
)
from dualcodec.nets.common import bicubic_down, bicubic_up, from_444, to_444
from helpers import TINY_CONFIG, TINY_LMBDA, build_tiny_model

TINY = ModelConfig(**TINY_CONFIG)
LEVEL = 30  # the side level (QP) of the forward passes


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
    out = model(y, uv, fake_base, LEVEL, TRAINING_FORMAT)
    assert out.y_hat.shape == (2, 1, 64, 48) and out.uv_hat.shape == (2, 2, 32, 24)
    assert out.y_lr.shape == (2, 1, 32, 24) and out.uv_lr.shape == (2, 2, 16, 12)
    assert out.side_bits.shape == out.base_bits.shape == (2,)
    assert torch.isfinite(out.side_bits).all() and (out.side_bits > 0).all()
    assert torch.equal(out.base_bits, torch.zeros(2))


def test_forward_scale_4_and_sizes_not_multiple_of_the_latent_stride():
    torch.manual_seed(0)
    model = DualLayerModel(ModelConfig(scale=4, **TINY_CONFIG))
    y, uv = _planes(b=1, h=40, w=56)  # low resolution 10x14 (chroma 5x7): not a multiple of the stride 4
    out = model(y, uv, fake_base, LEVEL, TRAINING_FORMAT)
    assert out.y_lr.shape == (1, 1, 10, 14) and out.uv_lr.shape == (1, 2, 5, 7)
    assert out.y_hat.shape == (1, 1, 40, 56) and out.uv_hat.shape == (1, 2, 20, 28)
    assert torch.isfinite(out.side_bits).all() and (out.side_bits > 0).all()


def test_forward_at_scale_1_is_a_post_filter_on_a_full_resolution_base():
    torch.manual_seed(0)
    model = DualLayerModel(ModelConfig(scale=1, **TINY_CONFIG))
    y, uv = _planes(b=2, h=34, w=42)  # 9x11 latent blocks, the last ones partial
    out = model(y, uv, fake_base, LEVEL, TRAINING_FORMAT)
    assert out.y_lr is y and out.uv_lr is uv  # no downsampling: the base layer codes the frame itself
    assert out.y_hat.shape == (2, 1, 34, 42) and out.uv_hat.shape == (2, 2, 17, 21)
    assert torch.isfinite(out.side_bits).all() and (out.side_bits > 0).all()
    # Untrained, the filter passes luma through (chroma goes through to_444 and back).
    assert torch.allclose(out.y_hat, y, atol=1e-5)
    assert torch.allclose(out.uv_hat, from_444(to_444(y, uv))[1], atol=1e-5)
    out.y_hat.sum().backward()  # and it trains


@pytest.mark.parametrize("residual", [True, False])
def test_side_residual_adds_the_enhancement_residual_channels_to_g_s(residual):
    config = ModelConfig(side_residual=residual, **TINY_CONFIG)
    model = DualLayerModel(config)
    extra = 3 * config.scale ** 2 if residual else 0  # Y, Cb, Cr per phase of the pixel shuffle
    assert model.g_s.body[-1].out_channels == config.side_channels + extra
    s, r_y, r_uv = model.g_s(torch.randn(1, config.latent_channels, 2, 3))
    assert s.shape == (1, config.side_channels, 8, 12)
    assert (r_y is None) == (r_uv is None) == (not residual)
    if residual:
        r = torch.cat([r_y, r_uv], dim=1)  # luma's phases, then chroma's
        assert r_y.shape[1] == config.scale ** 2
        assert r.shape == (1, extra, 8, 12) and torch.equal(r, torch.zeros_like(r))  # starts at zero


def test_the_enhancement_residual_is_added_on_the_upsampled_base():
    torch.manual_seed(0)
    model = DualLayerModel(ModelConfig(**TINY_CONFIG))
    y_lr_hat, uv_lr_hat = _lr_planes(b=1, h=16, w=24)
    w_hat = torch.randn(1, TINY.latent_channels, 4, 6)
    before = model.upsample(y_lr_hat, uv_lr_hat, w_hat)
    with torch.no_grad():  # a residual of +0.1 on every luma phase, 0 on chroma
        last = model.g_s.body[-1]
        last.bias[TINY.side_channels:TINY.side_channels + 4] = 0.1
    y_hat, uv_hat = model.upsample(y_lr_hat, uv_lr_hat, w_hat)
    assert torch.allclose(y_hat - before[0], torch.full_like(y_hat, 0.1), atol=1e-6)
    assert torch.allclose(uv_hat, before[1], atol=1e-6)
    # Skipped (no latents): g_s still runs on zero latents, so the bias shows there too.
    y_skip, _ = model.upsample(y_lr_hat, uv_lr_hat, None)
    y_zero, _ = model.upsample(y_lr_hat, uv_lr_hat, torch.zeros_like(w_hat))
    assert torch.equal(y_skip, y_zero)


def _forward_parts(model, y, uv, skip_lmbda):
    """A forward pass in evaluation (rounded latents) with its per-block bits captured, and
    the two reconstructions it chooses between: every block enhanced, every block skipped."""
    seen = {}
    hook = model.latent_coder.register_forward_hook(lambda m, args, out: seen.update(w_hat=out[0], bits=out[1]))
    out = model(y, uv, fake_base, LEVEL, TRAINING_FORMAT, skip_lmbda=skip_lmbda)
    hook.remove()
    with torch.no_grad():
        enhanced = model.upsample(out.y_lr, out.uv_lr, seen["w_hat"])
        skipped = model.upsample(out.y_lr, out.uv_lr, None)
    return out, seen["bits"], enhanced, skipped


def test_forward_without_skip_lmbda_enhances_every_block():
    model, _ = build_tiny_model(seed=0)
    model.eval()
    y, uv = _planes(b=2, h=64, w=48)
    out, bits, enhanced, _ = _forward_parts(model, y, uv, None)
    assert bits.shape == (2, 8, 6)  # per block: 32x24 base, stride 4
    assert torch.allclose(out.side_bits, bits.sum(dim=(1, 2)))
    assert torch.allclose(out.y_hat, enhanced[0], atol=1e-6) and torch.allclose(out.uv_hat, enhanced[1], atol=1e-6)


def test_forward_with_a_prohibitive_skip_lmbda_skips_every_block():
    from dualcodec.model import binary_entropy

    model, _ = build_tiny_model(seed=0)
    model.eval()
    y, uv = _planes(b=2, h=64, w=48)
    out, _, _, skipped = _forward_parts(model, y, uv, 1e12)
    assert torch.allclose(out.y_hat, skipped[0], atol=1e-6) and torch.allclose(out.uv_hat, skipped[1], atol=1e-6)
    # Only the flags are paid for (at the clipped probability the coder's p byte allows).
    flags = binary_entropy(torch.tensor(0.0)) * 8 * 6
    assert torch.allclose(out.side_bits, flags.expand(2))


@pytest.mark.parametrize("skip_lmbda", [0.0, 3e-4])
def test_forward_with_skip_lmbda_takes_each_block_from_the_cheaper_reconstruction(skip_lmbda):
    from dualcodec.model import binary_entropy

    model, _ = build_tiny_model(seed=0)  # random weights: its latents help some blocks, harm others
    model.eval()
    y, uv = _planes(b=2, h=64, w=48)
    out, bits, enhanced, skipped = _forward_parts(model, y, uv, skip_lmbda)
    # The encoder's rule (dualcodec.codec.ModelLayers.side), computed here from its parts.
    gain = block_distortion(*skipped, y, uv, 8) - block_distortion(*enhanced, y, uv, 8)
    chosen = gain > skip_lmbda * bits / (64 * 48)
    assert 0 < int(chosen.sum()) < chosen.numel(), "the example should enhance some blocks and skip others"
    for n in range(2):
        for i in range(8):
            for j in range(6):
                source = enhanced if chosen[n, i, j] else skipped
                rows, cols = slice(8 * i, 8 * i + 8), slice(8 * j, 8 * j + 8)
                assert torch.allclose(out.y_hat[n, :, rows, cols], source[0][n, :, rows, cols], atol=1e-6)
                rows, cols = slice(4 * i, 4 * i + 4), slice(4 * j, 4 * j + 4)
                assert torch.allclose(out.uv_hat[n, :, rows, cols], source[1][n, :, rows, cols], atol=1e-6)
    flags = binary_entropy(chosen.float().mean(dim=(1, 2))) * 48
    assert torch.allclose(out.side_bits, (chosen * bits).sum(dim=(1, 2)) + flags, rtol=1e-5)
    # The output with every block skipped comes with it (for loss.skip_weight).
    assert torch.allclose(out.y_skip, skipped[0], atol=1e-6) and torch.allclose(out.uv_skip, skipped[1], atol=1e-6)


def test_forward_without_side_stream_has_zero_side_bits():
    model = DualLayerModel(ModelConfig(side_stream=False, downsampler="bicubic", **TINY_CONFIG))
    assert not model.has_side_stream
    out = model(*_planes(), fake_base, LEVEL, TRAINING_FORMAT)
    assert torch.equal(out.side_bits, torch.zeros(2))
    assert out.y_hat.shape == (2, 1, 64, 48) and out.uv_hat.shape == (2, 2, 32, 24)


def test_entropy_model_stays_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    model = DualLayerModel(TINY)
    y, uv = _planes()
    reference = model(y, uv, fake_base, LEVEL, TRAINING_FORMAT).side_bits
    torch.manual_seed(0)
    model = DualLayerModel(TINY)
    seen = {}
    model.latent_coder.register_forward_hook(lambda m, args, out: seen.update(w=args[0], w_hat=out[0], bits=out[1]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(y, uv, fake_base, LEVEL, TRAINING_FORMAT)
    assert out.y_hat.dtype == out.uv_hat.dtype == torch.bfloat16  # the networks did run in bf16
    assert seen["w"].dtype == seen["w_hat"].dtype == seen["bits"].dtype == torch.float32
    assert torch.isfinite(out.side_bits).all()
    assert torch.allclose(out.side_bits, reference, rtol=0.1)  # bits from bf16 features, fp32 likelihoods


def test_forward_is_differentiable_end_to_end():
    model, _ = build_tiny_model(seed=0)
    y, uv = _planes()
    out = model(y, uv, fake_base, LEVEL, TRAINING_FORMAT)
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
    model.g_a.register_forward_hook(lambda m, args, out: seen.update(analysis=args[2]))
    model.upsampler.register_forward_hook(lambda m, args, out: seen.update(upsampler=args[:2]))
    out = model(*_planes(), spy, LEVEL, TRAINING_FORMAT)
    assert seen["y_lr"] is out.y_lr and seen["uv_lr"] is out.uv_lr
    assert torch.equal(out.base_bits, torch.full((2,), 123.0))
    decoded = torch.tensor([0.25, 0.75, 0.75]).view(1, 3, 1, 1)
    assert torch.equal(seen["upsampler"][0], decoded[:, :1].expand(2, 1, 32, 24))
    assert torch.equal(seen["upsampler"][1], decoded[:, 1:].expand(2, 2, 16, 12))
    assert torch.equal(seen["analysis"], decoded.expand(2, 3, 32, 24))


def test_the_latent_coder_sees_the_activity_classes_of_the_decoded_base():
    seen = {}
    model, _ = build_tiny_model(seed=0)
    model.latent_coder.register_forward_hook(lambda m, args, out: seen.update(classes=args[1], level=args[2]))
    y, uv = _planes()
    out = model(y, uv, fake_base, 37, TRAINING_FORMAT)
    y_lr = out.y_lr.detach()
    assert torch.equal(seen["classes"], model.side_classes(y_lr, TRAINING_FORMAT)) and seen["level"] == 37
    assert seen["classes"].shape == (2, 8, 6)
    # From the code values: the flat base of a constant frame is class 0 everywhere.
    flat = torch.full((1, 1, 32, 24), 0.5)
    assert torch.equal(model.side_classes(flat, TRAINING_FORMAT), torch.zeros(1, 8, 6, dtype=torch.int64))


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
@pytest.mark.parametrize("latents", ["random", "skipped"])
@pytest.mark.parametrize("chroma", ["luma", "own"])
def test_untrained_upsampler_is_bicubic_in_the_interior(scale, latents, chroma):
    torch.manual_seed(0)
    model = DualLayerModel(ModelConfig(scale=scale, **{**TINY_CONFIG, "up_chroma": chroma}))
    y_lr_hat, uv_lr_hat = _lr_planes()
    assert model.latent_size(16, 24) == (4, 6)
    # Neither the side features nor the enhancement residual matter yet.
    w_hat = torch.randn(2, TINY.latent_channels, 4, 6) if latents == "random" else None
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


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_own_chroma_mixes_chroma_on_its_own_grid_with_its_own_weights(scale):
    torch.manual_seed(0)
    model = DualLayerModel(ModelConfig(scale=scale, **TINY_CONFIG))
    up = model.upsampler
    assert up.own_chroma and up.conv_side is not None
    phases = max(1, (scale // 2) ** 2)  # chroma's own output phases per base luma pixel
    assert up.chroma_filters.shape == (up.num_filters, phases, up.taps, up.taps)
    assert up.chroma_head.out_channels == up.num_filters * phases and up.head.out_channels == up.num_filters * scale ** 2
    y_lr_hat, uv_lr_hat = _lr_planes(b=1)
    w_hat = torch.randn(1, TINY.latent_channels, 4, 6)
    with torch.no_grad():
        for p in up.parameters():
            p.add_(0.05 * torch.randn_like(p))
        side = model.side_features(w_hat, y_lr_hat)
        assert side.t.shape == (1, up.conv_in.out_channels, 16, 24)  # the side term, not s itself
        assert side.r_y.shape == (1, scale ** 2, 16, 24) and side.r_uv.shape == (1, 2 * phases, 16, 24)
        whole = model.upsample_with(y_lr_hat, uv_lr_hat, side, rows=None)
        strips = model.upsample_with(y_lr_hat, uv_lr_hat, side, rows=5)
        # Chroma's weights are its own: changing luma's head leaves chroma alone.
        up.head.weight.add_(1.0)
        luma_changed = model.upsample_with(y_lr_hat, uv_lr_hat, side, rows=None)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole, strips))
    assert whole[1].shape == (1, 2, 8 * scale, 12 * scale)
    assert not torch.allclose(luma_changed[0], whole[0]) and torch.equal(luma_changed[1], whole[1])


def test_luma_mode_shares_luma_weights_with_chroma():
    torch.manual_seed(0)
    model = DualLayerModel(ModelConfig(**{**TINY_CONFIG, "up_chroma": "luma"}))
    assert not hasattr(model.upsampler, "chroma_head") and model.upsampler.conv_side is None
    y_lr_hat, uv_lr_hat = _lr_planes(b=1)
    with torch.no_grad():
        model.upsampler.head.weight.normal_(0.0, 0.05)
        before = model.upsample(y_lr_hat, uv_lr_hat, None)
        model.upsampler.head.weight.add_(1.0)
        after = model.upsample(y_lr_hat, uv_lr_hat, None)
    assert not torch.allclose(after[1], before[1])


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


@pytest.mark.parametrize("scale", [2, 4])
def test_bicubic_up_folded_is_torchs_bicubic_unshuffled(scale):
    from dualcodec.nets.common import bicubic_up_folded

    x = torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(6))
    expected = torch.nn.functional.pixel_unshuffle(bicubic_up(x, scale), scale)
    assert torch.allclose(bicubic_up_folded(x, scale), expected, atol=1e-5)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_to_444_folded_is_to_444_unshuffled(scale):
    from dualcodec.nets.common import to_444_folded

    y, uv = _lr_planes(b=2, h=16, w=24)
    expected = torch.nn.functional.pixel_unshuffle(to_444(y, uv), scale)
    assert torch.allclose(to_444_folded(y, uv, scale), expected, atol=1e-7)


@pytest.mark.parametrize("scale", [1, 2])
def test_the_side_analysis_sees_the_original_the_residual_and_the_base_on_the_base_grid(scale):
    # The side analysis's input written the plain way, with torch's own resampling: the
    # original and its residual against the bicubic upsampled base, both 4:4:4, padded to
    # whole latent blocks and folded by pixel_unshuffle, beside the decoded base. The
    # sizes are not whole latent blocks, so the padding is checked too.
    from dualcodec.nets.side import RESIDUAL_STD

    torch.manual_seed(1)
    model = DualLayerModel(ModelConfig(scale=scale, **TINY_CONFIG)).eval()
    h, w = 10, 14  # base layer; 2 x 2 blocks of stride 4 after padding
    y, uv = torch.rand(1, 1, h * scale, w * scale), torch.rand(1, 2, h * scale // 2, w * scale // 2)
    y_lr_hat, uv_lr_hat = torch.rand(1, 1, h, w), torch.rand(1, 2, h // 2, w // 2)

    def chroma_up(uv_planes, size):
        return torch.nn.functional.interpolate(uv_planes, size=size, mode="bilinear", align_corners=False)

    def padded(x, multiple):
        return torch.nn.functional.pad(x, (0, (-x.shape[-1]) % multiple, 0, (-x.shape[-2]) % multiple), mode="replicate")

    x = padded(torch.cat([y, chroma_up(uv, y.shape[-2:])], dim=1), 4 * scale)
    x_lr = padded(torch.cat([y_lr_hat, chroma_up(uv_lr_hat, (h, w))], dim=1), 4)
    x_up = bicubic_up(x_lr, scale) if scale > 1 else x_lr
    mean, std = torch.tensor([0.45, 0.5, 0.5]).view(1, 3, 1, 1), torch.tensor([0.26, 0.07, 0.07]).view(1, 3, 1, 1)
    fold = torch.nn.functional.pixel_unshuffle
    z = torch.cat([fold((x - mean) / std, scale), fold((x - x_up) / RESIDUAL_STD, scale), (x_lr - mean) / std], dim=1)
    with torch.no_grad():
        w_ref = model.g_a.body(z)
        w_out = model.analyse(y, uv, y_lr_hat, uv_lr_hat)
    assert w_out.shape == (1, model.latent_coder.channels, 3, 4)
    assert torch.allclose(w_out, w_ref, atol=1e-4)


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
        a = model(y, uv, fake_base, LEVEL, TRAINING_FORMAT)
        b = loaded.model(y, uv, fake_base, LEVEL, TRAINING_FORMAT)
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


def test_version_2_model_file_is_refused_with_a_message(saved):
    # Model format 2 had a factorised side latent (CompressAI's EntropyBottleneck).
    _set_version(saved, 2)
    with pytest.raises(DualcodecError, match="version 2") as info:
        load_model(str(saved))
    message = str(info.value)
    assert "factorised" in message and "enhancement layer" in message and "retrain" in message
    assert "m.pt" in message and "\n" not in message


def test_unknown_model_name(tmp_path):
    with pytest.raises(DualcodecError, match="no model named or at"):
        resolve_model_path(str(tmp_path / "missing.pt"))
    with pytest.raises(DualcodecError):
        load_model("no-such-built-in-model")


def _coded(model, y, uv, level=LEVEL):
    """What the encoder codes for planes ``y, uv`` over a lossless base: ``(q, classes)``."""
    y_lr_hat, uv_lr_hat = (p.clamp(0, 1) for p in model.downsample(y, uv))
    with torch.no_grad():
        q = model.latent_coder.quantize(model.analyse(y, uv, y_lr_hat, uv_lr_hat), level)
    return q, model.side_classes(y_lr_hat, TRAINING_FORMAT)


def test_side_stream_round_trip_through_the_model_reproduces_w_hat(saved):
    model = load_model(str(saved)).model  # save_model ran update(): coding tables are ready
    coder = model.latent_coder
    y, uv = _planes(b=1, h=64, w=48, seed=1)
    q, classes = _coded(model, y, uv)
    assert q.shape == (1, TINY.latent_channels, 8, 6) and classes.shape == (1, 8, 6)
    assert (q != 0).float().mean() > 0.3  # the tiny model's latents carry something at level 30
    enhanced = torch.ones(8, 6, dtype=torch.bool)
    enhanced[2:5, 1:4] = False
    payload = coder.compress(q, classes, LEVEL, enhanced)
    decoded = coder.decompress(payload, classes)
    assert decoded.level == LEVEL and torch.equal(decoded.enhanced, enhanced)
    assert torch.equal(decoded.w_hat, coder.dequantize(q * enhanced, LEVEL))


def test_the_encoders_reconstruction_is_the_decoders_exactly(saved):
    model = load_model(str(saved)).model
    coder = model.latent_coder
    y, uv = _planes(b=1, h=64, w=48, seed=1)
    q, classes = _coded(model, y, uv)
    enhanced = torch.ones(8, 6, dtype=torch.bool)
    decoded = coder.decompress(coder.compress(q, classes, LEVEL, enhanced), classes)
    y_lr_hat, uv_lr_hat = (p.clamp(0, 1) for p in model.downsample(y, uv))
    with torch.no_grad():
        a = model.upsample(y_lr_hat, uv_lr_hat, decoded.w_hat)
        b = model.upsample(y_lr_hat, uv_lr_hat, coder.dequantize(q * enhanced, LEVEL))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_side_stream_size_follows_the_latents(saved):
    model = load_model(str(saved)).model
    coder = model.latent_coder

    def size(h, w, level=LEVEL):
        q, classes = _coded(model, *_planes(b=1, h=h, w=w, seed=2), level)
        return len(coder.compress(q, classes, level, torch.ones(q.shape[-2:], dtype=torch.bool)))

    assert size(128, 128) > size(32, 32)  # more blocks
    assert size(64, 64, level=20) > size(64, 64, level=30) > size(64, 64, level=45)  # finer quantiser


@pytest.mark.parametrize("b, h, w, block", [(1, 64, 48, 8), (2, 32, 16, 4),
                                            (1, 30, 22, 8), (2, 18, 34, 4), (1, 6, 10, 16)])
def test_block_distortion_shares_out_each_frames_plane_distortion(b, h, w, block):
    gen = torch.Generator().manual_seed(h * w)
    y, uv = torch.rand(b, 1, h, w, generator=gen), torch.rand(b, 2, h // 2, w // 2, generator=gen)
    y_hat, uv_hat = y + 0.1 * torch.randn(y.shape, generator=gen), uv + 0.1 * torch.randn(uv.shape, generator=gen)
    blocks = block_distortion(y_hat, uv_hat, y, uv, block)
    assert blocks.shape == (b, -(-h // block), -(-w // block))  # partial blocks at the right and bottom edges
    assert (blocks >= 0).all()
    for n in range(b):  # each frame's blocks add up to that frame's distortion
        frame = plane_distortion(y_hat[n:n + 1], uv_hat[n:n + 1], y[n:n + 1], uv[n:n + 1], kind="l1")
        assert float(blocks[n].sum()) == pytest.approx(float(frame), rel=1e-5), n
    # Each block holds its own pixels' error: 6/8 of luma and 2/8 of chroma, as means over the planes.
    i, j = blocks.shape[1] - 1, 0
    ey = (y_hat - y)[:1].abs()[..., i * block:(i + 1) * block, :block].sum() / (h * w)
    euv = (uv_hat - uv)[:1].abs()[..., i * block // 2:(i + 1) * block // 2, :block // 2].sum() / uv[:1].numel()
    assert float(blocks[0, i, j]) == pytest.approx(float((6 * ey + 2 * euv) / 8), rel=1e-5)


def test_block_distortion_of_an_error_in_one_block_is_in_that_block():
    y, uv = torch.zeros(2, 1, 24, 40), torch.zeros(2, 2, 12, 20)
    y_hat = y.clone()
    y_hat[1, :, 9, 17] = 0.5  # frame 2, block (1, 2) at block size 8
    blocks = block_distortion(y_hat, uv, y, uv, 8)
    assert float(blocks[1, 1, 2]) == pytest.approx(6 * 0.5 / (24 * 40) / 8)
    blocks[1, 1, 2] = 0
    assert torch.equal(blocks, torch.zeros(2, 3, 5))


def test_latent_size_rounds_up():
    model = DualLayerModel(TINY)  # stride 4
    assert model.latent_size(16, 24) == (4, 6)
    assert model.latent_size(17, 1) == (5, 1)
    assert DualLayerModel(ModelConfig(side_stride=8, **TINY_CONFIG)).latent_size(17, 1) == (3, 1)


def test_model_file_is_self_describing(saved):
    payload = torch.load(saved, weights_only=True)
    assert payload["format"] == "dualcodec-model" and payload["version"] == MODEL_VERSION == 3
    assert payload["config"]["up_width"] == 8 and payload["config"]["side_stride"] == 4
    # The coding tables are in the file (update() ran before saving): the Gaussians' CDFs and,
    # per (level, class, channel), the entry the decoder uses, and the gains per level.
    state = payload["state_dict"]
    assert state["latent_coder.gaussian._quantized_cdf"].shape[0] == 64
    assert state["latent_coder.index_table"].shape == (64, 7, TINY.latent_channels)
    assert state["latent_coder.gain_table"].shape == (64, TINY.latent_channels)
    assert state["latent_coder.index_table"].dtype == torch.int32


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


FOLDED = {**TINY_CONFIG, "up_form": "folded"}


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("latents", ["random", "skipped"])
def test_untrained_folded_upsampler_is_bicubic_up_to_the_edges(scale, latents):
    torch.manual_seed(0)
    model = DualLayerModel(ModelConfig(scale=scale, **FOLDED))
    y_lr_hat, uv_lr_hat = _lr_planes()
    w_hat = torch.randn(2, TINY.latent_channels, 4, 6) if latents == "random" else None
    y_hat, uv_hat = model.upsample(y_lr_hat, uv_lr_hat, w_hat)
    # Both planes bicubic on their own grids, edges replicated in the base layer's pixels.
    assert torch.allclose(y_hat, bicubic_up(y_lr_hat, scale), atol=1e-5)
    assert torch.allclose(uv_hat, bicubic_up(uv_lr_hat, scale), atol=1e-5)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_folded_upsampler_places_the_residual_as_the_mixture_form_does(scale):
    """Untrained upsamplers add nothing of their own: what the latents change is the
    enhancement residual alone, and both forms must put it on the same output pixels."""
    torch.manual_seed(0)
    mixture = DualLayerModel(ModelConfig(scale=scale, **TINY_CONFIG))
    folded = DualLayerModel(ModelConfig(scale=scale, **FOLDED))
    with torch.no_grad():
        mixture.g_s.body[-1].weight.normal_(0.0, 0.05)
    folded.g_s.load_state_dict(mixture.g_s.state_dict())
    y_lr_hat, uv_lr_hat = _lr_planes(h=20, w=28)  # 20x28: latents on 20x28, folded grid 10x14
    w_hat = torch.randn(2, TINY.latent_channels, 5, 7)
    changes = []
    for model in (mixture, folded):
        with torch.no_grad():
            enhanced, skipped = model.upsample(y_lr_hat, uv_lr_hat, w_hat), model.upsample(y_lr_hat, uv_lr_hat, None)
        changes.append([a - b for a, b in zip(enhanced, skipped)])
    assert changes[0][0].abs().max() > 1e-2  # the residual is there
    for a, b in zip(*changes):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_folded_upsampler_runs_on_the_folded_grid(scale):
    torch.manual_seed(0)
    model = DualLayerModel(ModelConfig(scale=scale, **FOLDED))
    up = model.upsampler
    assert up.filters.shape == (up.num_filters, (2 * scale) ** 2 * 4, 3, 3)
    assert up.head.out_channels == up.num_filters * (2 * scale) ** 2
    assert up.chroma_head.out_channels == 2 * up.num_filters * scale ** 2  # each chroma plane its own weights
    y_lr_hat, uv_lr_hat = _lr_planes(b=1, h=18, w=24)  # the latents cover 20x24: cropped to 9x12
    with torch.no_grad():
        for p in up.parameters():
            p.add_(0.05 * torch.randn_like(p))
        side = model.side_features(torch.randn(1, TINY.latent_channels, 5, 6), y_lr_hat)
        assert up.side_size(18, 24) == (9, 12)
        assert side.t.shape == (1, up.conv_in.out_channels, 9, 12)
        assert side.r_y.shape == (1, (2 * scale) ** 2, 9, 12) and side.r_uv.shape == (1, 2 * scale ** 2, 9, 12)
        whole = model.upsample_with(y_lr_hat, uv_lr_hat, side, rows=None)
        strips = model.upsample_with(y_lr_hat, uv_lr_hat, side, rows=4)
        up.head.weight.add_(1.0)
        luma_changed = model.upsample_with(y_lr_hat, uv_lr_hat, side, rows=None)
    assert whole[0].shape == (1, 1, 18 * scale, 24 * scale) and whole[1].shape == (1, 2, 9 * scale, 12 * scale)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole, strips))
    assert (whole[0] - bicubic_up(y_lr_hat, scale)).abs().max() > 1e-3  # trained weights: not bicubic
    assert not torch.allclose(luma_changed[0], whole[0]) and torch.equal(luma_changed[1], whole[1])


def test_a_level_input_upsampler_filters_each_quantiser_its_own_way():
    model, _ = build_tiny_model(up_form="folded", scale=1, side_stream=False, level_input=True)
    torch.manual_seed(3)
    y, uv = torch.rand(1, 1, 16, 24), torch.rand(1, 2, 8, 12)
    with torch.no_grad():
        at_22, at_42 = (model.upsample(y, uv, None, level) for level in (22, 42))
        assert not torch.equal(at_22[0], at_42[0])
        # a batch takes a level per item
        both = model.upsample(y.expand(2, -1, -1, -1), uv.expand(2, -1, -1, -1), None, torch.tensor([22.0, 42.0]))
        assert torch.allclose(both[0][0], at_22[0][0], atol=1e-6) and torch.allclose(both[0][1], at_42[0][0], atol=1e-6)
        with pytest.raises(ValueError, match="quantiser level"):
            model.upsample(y, uv, None)
        # untrained, the level adds nothing: the scale-1 upsampler starts as the identity
        fresh = DualLayerModel(ModelConfig(scale=1, up_form="folded", up_chroma="own", side_stream=False,
                                           level_input=True))
        assert torch.equal(fresh.upsample(y, uv, None, 22)[0], y) and torch.equal(fresh.upsample(y, uv, None, 42)[1], uv)


def test_the_level_input_needs_the_folded_form():
    with pytest.raises(DualcodecError, match="level_input needs model.up_form = 'folded'"):
        ModelConfig(level_input=True)


# -- the temporal upsampler ------------------------------------------------------------------

TEMPORAL = {"up_form": "folded", "side_stream": False, "temporal": True}


def _memory(b=1, h=16, w=24, seed=5):
    from dualcodec.nets.upsampler import Memory

    y_lr, uv_lr = _lr_planes(b=b, h=h, w=w, seed=seed)
    y_hat, uv_hat = bicubic_up(y_lr, 2), bicubic_up(uv_lr, 2)
    return Memory(y_lr, uv_lr, y_hat + 0.05 * torch.randn_like(y_hat), uv_hat)


WIDE = {"temporal_width": 8, "temporal_depth": 2}  # the temporal branch's wide form


@pytest.mark.parametrize("branch", [{}, WIDE], ids=["1x1", "wide"])
def test_an_untrained_temporal_part_leaves_the_per_frame_upsampler_as_it_was(branch):
    per_frame, _ = build_tiny_model(up_form="folded", side_stream=False)
    temporal = DualLayerModel(ModelConfig(**{**TINY_CONFIG, **TEMPORAL, **branch}))
    missing, unexpected = temporal.load_state_dict(per_frame.state_dict(), strict=False)
    assert not unexpected and missing and all(".memory_" in key for key in missing)
    y_lr_hat, uv_lr_hat = _lr_planes(b=1)
    with torch.no_grad():
        expected = per_frame.upsample(y_lr_hat, uv_lr_hat, None)
        got = temporal.upsample(y_lr_hat, uv_lr_hat, None, memory=_memory())
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_the_temporal_upsampler_blends_towards_the_previous_output_where_told():
    model, _ = build_tiny_model(seed=0, **TEMPORAL)
    y_lr_hat, uv_lr_hat = _lr_planes(b=1)
    memory = _memory()
    with torch.no_grad():
        alone = model.upsample(y_lr_hat, uv_lr_hat, None)
        after = model.upsample(y_lr_hat, uv_lr_hat, None, memory=memory)
        assert not torch.allclose(alone[0], after[0])
        # a memory marked absent (a graph's stand-in at a GOP's first frame) is no memory
        absent = memory._replace(present=torch.zeros(1))
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(alone, model.upsample(y_lr_hat, uv_lr_hat, None,
                                                                                         memory=absent)))
        # a gate of 1 everywhere gives the previous output back, warped by the motion ...
        from dualcodec.nets.upsampler import warp

        model.upsampler.memory_gate.weight.zero_()
        model.upsampler.memory_gate.bias.fill_(1.0)
        v = model.upsampler.motion(y_lr_hat, uv_lr_hat, memory)
        assert v.abs().max() > 0.01
        copied = model.upsample(y_lr_hat, uv_lr_hat, None, memory=memory)
        assert torch.allclose(copied[0], warp(memory.y_hat, v), atol=1e-6)
        assert torch.allclose(copied[1], warp(memory.uv_hat, v), atol=1e-6)
        # ... and without motion, as it was
        model.upsampler.memory_motion[-1].weight.zero_()
        copied = model.upsample(y_lr_hat, uv_lr_hat, None, memory=memory)
    assert torch.allclose(copied[0], memory.y_hat, atol=1e-6) and torch.allclose(copied[1], memory.uv_hat, atol=1e-6)


def test_forward_clips_upsamples_each_frame_after_the_previous_one():
    model, _ = build_tiny_model(seed=0, **TEMPORAL)
    model.eval()
    b, t = 2, 3
    y, uv = crops_to_planes(_images(b=b * t, h=32, w=32))
    y, uv = y.unflatten(0, (b, t)), uv.unflatten(0, (b, t))
    out = model(y, uv, fake_base, LEVEL, TRAINING_FORMAT)
    assert out.y_hat.shape == (b * t, 1, 32, 32) and out.uv_hat.shape == (b * t, 2, 16, 16)
    with torch.no_grad():
        from dualcodec.nets.upsampler import Memory

        memory = None
        for i in range(t):
            y_lr, uv_lr = model.downsample(y[:, i], uv[:, i])
            frame = model.upsample(y_lr, uv_lr, None, LEVEL, memory)
            memory = Memory(y_lr, uv_lr, *frame)
            assert torch.allclose(frame[0], out.y_hat.unflatten(0, (b, t))[:, i], atol=1e-6)
    # a clip's first frame has no memory: the per-frame output
    first = model.upsample(*model.downsample(y[:, 0], uv[:, 0]), None, LEVEL)
    assert torch.allclose(first[0], out.y_hat[::t], atol=1e-6)


@pytest.mark.parametrize("branch", [{}, WIDE], ids=["1x1", "wide"])
def test_forward_clips_trains_the_temporal_part_through_the_memory(branch):
    model, _ = build_tiny_model(seed=0, **TEMPORAL, **branch)  # a trained per-frame part (its heads non-zero) ...
    for conv in (model.upsampler.memory_in, model.upsampler.memory_gate):  # ... and an untrained temporal part
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    y, uv = crops_to_planes(_images(b=4, h=32, w=32))
    out = model(y.unflatten(0, (2, 2)), uv.unflatten(0, (2, 2)), fake_base, LEVEL, TRAINING_FORMAT)
    plane_distortion(out.y_hat, out.uv_hat, y, uv).backward()
    # zero at the start, both learn: the gate from the previous output, the input from the gate's features
    assert model.upsampler.memory_gate.weight.grad.abs().sum() > 0
    assert model.upsampler.memory_in.weight.grad.abs().sum() > 0
    if branch:  # the wide form's branch is in the graph (its gradient zero until the 1x1 after it has learnt)
        assert model.upsampler.memory_branch[0].weight.grad is not None


AHEAD = {"temporal_ahead": True}  # the two-sided experiment: the next frame's base too


def test_an_untrained_ahead_branch_leaves_the_temporal_upsampler_as_it_was():
    from dualcodec.nets.upsampler import Ahead

    one_sided, _ = build_tiny_model(seed=0, **TEMPORAL)
    two_sided = DualLayerModel(ModelConfig(**{**TINY_CONFIG, **TEMPORAL, **AHEAD}))
    missing, unexpected = two_sided.load_state_dict(one_sided.state_dict(), strict=False)
    assert not unexpected and missing and all(".memory_ahead_" in key for key in missing)
    assert all(two_sided.is_temporal_parameter(key) for key in missing)  # trained with the temporal part
    y_lr_hat, uv_lr_hat = _lr_planes(b=1)
    ahead, memory = Ahead(*_lr_planes(b=1, seed=9)), _memory()
    with torch.no_grad():
        expected = one_sided.upsample(y_lr_hat, uv_lr_hat, None, memory=memory)
        got = two_sided.upsample(y_lr_hat, uv_lr_hat, None, memory=memory, ahead=ahead)
        assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
        torch.nn.init.normal_(two_sided.upsampler.memory_ahead_in.weight, std=0.1)
        told = two_sided.upsample(y_lr_hat, uv_lr_hat, None, memory=memory, ahead=ahead)
        absent = two_sided.upsample(y_lr_hat, uv_lr_hat, None, memory=memory,
                                    ahead=ahead._replace(present=torch.zeros(1)))
    assert not torch.allclose(told[0], expected[0])  # the next frame now counts ...
    assert torch.allclose(absent[0], expected[0], atol=1e-6)  # ... where it is present


def test_forward_clips_gives_each_frame_the_next_ones_base_and_trains_through_it():
    model, _ = build_tiny_model(seed=0, **TEMPORAL, **AHEAD)
    torch.nn.init.normal_(model.upsampler.memory_ahead_in.weight, std=0.1)
    b, t = 2, 3
    y, uv = crops_to_planes(_images(b=b * t, h=32, w=32))
    y, uv = y.unflatten(0, (b, t)), uv.unflatten(0, (b, t))
    out = model(y, uv, fake_base, LEVEL, TRAINING_FORMAT)
    with torch.no_grad():
        from dualcodec.nets.upsampler import Ahead, Memory

        base = [model.downsample(y[:, i], uv[:, i]) for i in range(t)]
        memory = None
        for i in range(t):
            ahead = Ahead(*base[i + 1]) if i + 1 < t else None  # the clip's last frame has none
            frame = model.upsample(*base[i], None, LEVEL, memory, ahead)
            memory = Memory(*base[i], *frame)
            assert torch.allclose(frame[0], out.y_hat.unflatten(0, (b, t))[:, i], atol=1e-6)
    plane_distortion(out.y_hat, out.uv_hat, y.flatten(0, 1), uv.flatten(0, 1)).backward()
    assert model.upsampler.memory_ahead_in.weight.grad.abs().sum() > 0


def test_the_decoder_refuses_a_two_sided_model(tmp_path):
    from dualcodec.codec import ModelLayers
    from dualcodec.export import export_int8
    from dualcodec.model import load_model, save_model

    model, config = build_tiny_model(seed=0, **TEMPORAL, **AHEAD)
    path = tmp_path / "ahead.pt"
    save_model(model, config, "ahead", path, lmbda=0.0)
    loaded = load_model(str(path))
    with pytest.raises(DualcodecError, match="reads the next frame's base .* experiments/temporal_ahead.py"):
        ModelLayers(loaded)
    with pytest.raises(DualcodecError, match="the decoder does not run"):
        export_int8(loaded, [tmp_path])


def test_forward_clips_of_a_per_frame_model_is_its_forward_per_frame():
    model, _ = build_tiny_model(seed=0, up_form="folded", side_stream=False)
    y, uv = crops_to_planes(_images(b=4, h=32, w=32))
    with torch.no_grad():
        clips = model(y.unflatten(0, (2, 2)), uv.unflatten(0, (2, 2)), fake_base, LEVEL, TRAINING_FORMAT)
        frames = model(y, uv, fake_base, LEVEL, TRAINING_FORMAT)
    assert torch.equal(clips.y_hat, frames.y_hat) and torch.equal(clips.uv_hat, frames.uv_hat)


@pytest.mark.parametrize("config, message", [
    ({"temporal": True, "side_stream": False}, "temporal needs model.up_form = 'folded'"),
    ({"temporal": True, "up_form": "folded", "up_chroma": "own"}, "temporal works without a side stream"),
    ({"temporal_width": 16}, "temporal_width widens a temporal model's branch: set model.temporal"),
    ({"temporal_ahead": True}, "temporal_ahead adds the next frame to a temporal model: set model.temporal"),
    ({**TEMPORAL, "up_chroma": "own", "temporal_width": -1}, "temporal_width must be at least 0"),
    ({**TEMPORAL, "up_chroma": "own", "temporal_width": 16, "temporal_depth": 0}, "temporal_depth at least 1"),
])
def test_the_temporal_upsampler_needs_the_folded_form_and_no_side_stream(config, message):
    with pytest.raises(DualcodecError, match=message):
        ModelConfig(**config)


def test_warp_by_zero_motion_is_the_identity_and_by_whole_pixels_a_shift():
    from dualcodec.nets.upsampler import warp

    torch.manual_seed(0)
    plane = torch.rand(2, 3, 16, 24)
    assert torch.allclose(warp(plane, torch.zeros(2, 2, 4, 6)), plane, atol=1e-6)
    # motion is in base pixels on a grid of a quarter of the plane: half the grid's pixels,
    # so 1 is two of the plane's pixels here; out(p) = plane(p + v)
    v = torch.zeros(2, 2, 4, 6)
    v[:, 0] = 1.0  # x
    v[:, 1] = -0.5  # y
    shifted = warp(plane, v)
    assert torch.allclose(shifted[..., 2:, :-2], plane[..., 1:-1, 2:], atol=1e-5)
    assert torch.allclose(shifted[..., 0, :-2], plane[..., 0, 2:], atol=1e-5)  # edges repeat


def test_the_alignment_error_trains_the_motion_onto_the_current_frame():
    from dualcodec.nets.upsampler import Memory

    model, _ = build_tiny_model(seed=0, perturb=False, **TEMPORAL)
    up = model.upsampler
    y_lr, uv_lr = _lr_planes(b=1, h=16, w=24)
    still = Memory(y_lr, uv_lr, bicubic_up(y_lr, 2), bicubic_up(uv_lr, 2))
    assert up.alignment_error(y_lr, uv_lr, still).item() < 1e-6  # no motion (untrained), no change
    moved = torch.roll(y_lr, 2, dims=-1)  # the scene moved two base pixels right
    error = up.alignment_error(moved, torch.roll(uv_lr, 1, dims=-1), still)
    error.sum().backward()
    assert error.item() > 0 and up.memory_motion[-1].weight.grad.abs().sum() > 0
