"""Fewer layout copies in the temporal blocks (lumiere.models.temporal_layout; issue 21, item 7).

The reference below is the per-block folding the STUNet used before: every attention block folds
((b t), c, h, w) into tokens and back itself. The new stacks must give the same outputs and
gradients, with fewer conversions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from lumiere.models import STUNet, build_fixed_resolution_inflation, build_unet, temporal_layout
from lumiere.models.t2i import unet_text_dim
from lumiere.models.temporal import FactorizedSpaceTimeConvBlock, TemporalAttentionBlock, frame_position_encoding
from lumiere.models.temporal_conditioning import FeatureModulation
from lumiere.models.temporal_layout import TemporalStack

# The new path runs the same ops on the same values and skips only exact round trips
# (tokens -> frames -> tokens), so any difference is float32 rounding of re-scheduled reductions.
RTOL, ATOL = 1e-5, 1e-6


def _reference_attention(block: TemporalAttentionBlock, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The unmodulated TemporalAttentionBlock as it was: fold to tokens, attend, unfold, on frame-folded input."""
    h, w = x.shape[-2:]
    tokens = rearrange(x, "(b t) c h w -> (b h w) t c", t=num_frames)
    normed = block.norm(tokens)
    normed = normed + frame_position_encoding(num_frames, normed.shape[-1], normed.device, normed.dtype)
    q, k, v = rearrange(block.to_qkv(normed), "n t (three heads d) -> three n heads t d", three=3, heads=block.num_heads)
    attended = rearrange(F.scaled_dot_product_attention(q, k, v), "n heads t d -> n t (heads d)")
    tokens = tokens + block.proj_out(attended)
    return rearrange(tokens, "(b h w) t c -> (b t) c h w", h=h, w=w)


def _reference_stack_forward(stack: TemporalStack, x, num_frames, emb=None):
    """The per-block folding: each block takes and returns frame-folded maps."""
    for block in stack.blocks:
        if isinstance(block, TemporalAttentionBlock) and block.modulation is None:
            x = _reference_attention(block, x, num_frames)
        else:
            x = block(x, num_frames, emb)
    return x


def _randomise(module: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_a_stack_of_attention_and_conv_blocks_matches_the_per_block_folding():
    torch.manual_seed(0)
    stack = TemporalStack([TemporalAttentionBlock(16, 2), TemporalAttentionBlock(16, 2), FactorizedSpaceTimeConvBlock(16),
                           TemporalAttentionBlock(16, 4), TemporalAttentionBlock(16, 1)])
    _randomise(stack)
    x = torch.randn(2 * 6, 16, 5, 3, generator=torch.Generator().manual_seed(2), requires_grad=True)
    out = stack(x, 6)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in stack.parameters()] + [x.grad.clone()]
    stack.zero_grad(set_to_none=True)
    x.grad = None
    reference = _reference_stack_forward(stack, x, 6)
    reference.square().sum().backward()
    torch.testing.assert_close(out, reference, rtol=RTOL, atol=ATOL)
    for got, want in zip(grads, [p.grad for p in stack.parameters()] + [x.grad]):
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


def test_attention_keeps_the_token_layout_and_refuses_bad_tokens():
    block = TemporalAttentionBlock(8, 2)
    _randomise(block)
    x = torch.randn(2 * 4, 8, 3, 3)
    tokens = rearrange(x, "(b t) c h w -> (b h w) t c", t=4)
    out = block(tokens, 4)
    assert out.shape == tokens.shape
    torch.testing.assert_close(rearrange(out, "(b h w) t c -> (b t) c h w", h=3, w=3), block(x, 4), rtol=RTOL, atol=ATOL)
    with pytest.raises(ValueError, match="t=5"):
        block(tokens, 5)
    modulated = TemporalAttentionBlock(8, 2, modulation=FeatureModulation(4, 8))
    with pytest.raises(ValueError, match="takes frame-folded features"):
        modulated(tokens, 4, torch.randn(8, 4))


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_unet("if_stage1_tiny").eval()


def _inputs(unet, frames=8):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 3, frames, 16, 16, generator=g), torch.tensor([17, 640]),
            torch.randn(2, 6, unet_text_dim(unet), generator=g))


@pytest.mark.parametrize("build", [STUNet, build_fixed_resolution_inflation], ids=["stunet", "fixed_resolution"])
def test_stunet_outputs_and_gradients_match_the_per_block_folding(unet, build, monkeypatch):
    torch.manual_seed(0)
    model = build(unet)
    _randomise(model.mid_temporal)
    _randomise(torch.nn.ModuleList([*model.down_temporal, *model.up_temporal]), seed=3)
    inputs = _inputs(unet)

    def run():
        model.zero_grad(set_to_none=True)
        out = model(*inputs)
        out.square().mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.trainable_named_parameters()}

    out, grads = run()
    monkeypatch.setattr(TemporalStack, "forward", _reference_stack_forward)
    reference, reference_grads = run()
    torch.testing.assert_close(out, reference, rtol=RTOL, atol=ATOL)
    for name in grads:
        torch.testing.assert_close(grads[name], reference_grads[name], rtol=RTOL, atol=ATOL, msg=name)


def test_the_stacked_mid_attention_converts_once_each_way(unet, monkeypatch):
    model = STUNet(unet, num_temporal_attention_layers=4)
    conversions = {"to_tokens": 0, "to_frames": 0}
    to_tokens, to_frames = temporal_layout.frames_to_tokens, temporal_layout.tokens_to_frames

    def counting_to_tokens(*args):
        conversions["to_tokens"] += 1
        return to_tokens(*args)

    def counting_to_frames(*args):
        conversions["to_frames"] += 1
        return to_frames(*args)

    monkeypatch.setattr(temporal_layout, "frames_to_tokens", counting_to_tokens)
    monkeypatch.setattr(temporal_layout, "tokens_to_frames", counting_to_frames)
    x = torch.randn(2 * 2, model.mid_temporal.blocks[0].norm.normalized_shape[0], 4, 4)
    with torch.no_grad():
        model.mid_temporal(x, 2)
    assert conversions == {"to_tokens": 1, "to_frames": 1}  # per-block folding: 4 each


def test_compile_temporal_is_off_by_default_and_wraps_the_temporal_modules_in_place(unet):
    plain = STUNet(unet)
    compiled = STUNet(unet, compile_temporal=True)
    stacks = [compiled.mid_temporal, *(s for level in compiled.down_temporal for s in level.layers if len(s.blocks))]
    assert all(stack._compiled_call_impl is not None for stack in stacks)
    assert compiled.down_temporal[0].resample._compiled_call_impl is not None
    assert plain.mid_temporal._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(plain.state_dict())  # checkpoints load either way


@pytest.mark.slow
def test_the_benchmark_counts_fewer_copy_bytes_after():
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "temporal_layout.py"
    result = subprocess.run([sys.executable, str(script), "--preset", "if_stage1_tiny", "--size", "16", "--frames", "8",
                             "--reps", "1", "--threads", "1"], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    ratio = next(line for line in result.stdout.splitlines() if line.startswith("copy bytes stunet / stunet_per_block"))
    assert float(ratio.split("=")[1].split()[0]) < 1.0
