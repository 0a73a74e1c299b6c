"""The CPU demo's temporal conditioning (lumiere.models.temporal_conditioning; not in the paper)."""

from __future__ import annotations

import pytest
import torch

from lumiere.errors import ConfigError
from lumiere.models import FactorizedSpaceTimeConvBlock, TemporalAttentionBlock
from lumiere.models.temporal_conditioning import CaptionPooling, FeatureModulation, SpatialLayoutShift, TemporalConditioning

C, T, H, W = 8, 6, 5, 4


def test_layout_shift_starts_at_zero_and_writes_a_resolution_independent_smooth_map():
    layout = SpatialLayoutShift(emb_dim=6, channels=3, frequencies=4)
    emb = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    assert layout(emb, 8, 8).abs().max() == 0  # zero projection: no shift at initialisation
    basis = layout.basis(8, 8)
    assert basis.shape == (16, 8, 8)
    # DCT-II: the first map is constant, and the maps are orthogonal (with norms h w / (2^[u>0] 2^[v>0])).
    assert torch.allclose(basis[0], torch.ones(8, 8))
    gram = torch.einsum("khw,lhw->kl", basis, basis)
    assert torch.allclose(gram, torch.diag(torch.diagonal(gram)), atol=1e-4)
    # The same coefficients mean the same layout at every level: pooling the 16x16 map to 8x8 gives
    # nearly the 8x8 map (exactly so for the constant term), e.g. "object on the left" at every level.
    with torch.no_grad():
        layout.proj.weight.normal_(generator=torch.Generator().manual_seed(2))
    fine, coarse = layout(emb, 16, 16), layout(emb, 8, 8)
    pooled = torch.nn.functional.avg_pool2d(fine, 2)
    assert (pooled - coarse).abs().max() < 0.15 * coarse.abs().max()
    with pytest.raises(ConfigError, match="frequency"):
        SpatialLayoutShift(6, 3, frequencies=0)


@pytest.mark.parametrize("block_type", [FactorizedSpaceTimeConvBlock, TemporalAttentionBlock])
def test_layout_shift_lets_the_embedding_say_where(block_type):
    # A frame whose features are the same at every pixel: FiLM alone (a per-frame scale and shift) keeps
    # the attention block's output the same at every pixel; the layout shift makes it depend on the place.
    torch.manual_seed(3)
    features = torch.randn(T, C, 1, 1).expand(T, C, H, W).contiguous()  # one video, constant in space
    emb = torch.randn(T, 16)

    def spatial_spread(block):
        with torch.no_grad():
            # past initialisation (the same draw for both blocks): the block's output shows its inside
            block.proj_out.weight.normal_(generator=torch.Generator().manual_seed(0))
            out = block(features, num_frames=T, emb=emb)
        return (out - out.mean(dim=(-2, -1), keepdim=True)).abs().max().item()

    plain = block_type(C, modulation=FeatureModulation(16, C))
    with_layout = block_type(C, modulation=FeatureModulation(16, C, layout_frequencies=3))
    with_layout.load_state_dict(plain.state_dict(), strict=False)
    assert spatial_spread(with_layout) == pytest.approx(spatial_spread(plain), abs=1e-6)  # zero at init: same block
    with torch.no_grad():
        with_layout.modulation.layout.proj.weight.normal_()
    if block_type is TemporalAttentionBlock:
        assert spatial_spread(plain) < 1e-5
    assert spatial_spread(with_layout) > spatial_spread(plain) + 1e-2


def test_whitened_pooling_gives_a_rare_word_the_scale_of_a_common_one():
    """Captions = a shared prefix + one of 4 'colour' words (6 distinct tokens) + one of 4 'direction'
    words (one token, nearly the same for all four): after whitening both factors reach the MLP at
    comparable scale."""
    torch.manual_seed(0)
    prefix, colours = torch.randn(20, 16), torch.randn(4, 6, 16)
    directions = torch.randn(1, 1, 16) + 0.3 * torch.randn(4, 1, 16)
    text = torch.stack([torch.cat([prefix, colours[c], directions[d]]) for c in range(4) for d in range(4)])
    mask = torch.ones(text.shape[:2], dtype=torch.bool)
    pooling = CaptionPooling(16, 12, pooling="whitened")
    assert pooling.norm is None and pooling.needs_whitening
    summary = pooling.fit_whitening(pooling.pooled_for_whitening(text, mask))
    assert not pooling.needs_whitening and summary["captions"] == 16

    def factor_spread(vectors, factor):  # mean distance between the factor's group means
        groups = vectors.view(4, 4, -1).mean(dim=1 - factor)
        return float(torch.pdist(groups).mean())

    raw = pooling.pooled_for_whitening(text, mask)
    whitened = (raw - pooling.whitening_mean) @ pooling.whitening_matrix
    assert factor_spread(raw, 1) < 0.2 * factor_spread(raw, 0)  # the direction word is drowned out ...
    assert factor_spread(whitened, 1) > 0.5 * factor_spread(whitened, 0)  # ... and whitened, it is not
    torch.testing.assert_close(whitened.mean(dim=0), torch.zeros(16), atol=1e-4, rtol=0)
    assert torch.linalg.eigvalsh(whitened.T @ whitened / 15).max() <= 1.0 + 1e-4  # no direction above unit variance

    # the whitening is part of the module's state: a copy loaded from it pools identically
    copy = CaptionPooling(16, 12, pooling="whitened")
    copy.load_state_dict(pooling.state_dict())
    assert not copy.needs_whitening
    with torch.no_grad():
        torch.testing.assert_close(copy(text, mask), pooling(text, mask))
    with pytest.raises(ConfigError, match="whitened"):
        CaptionPooling(16, 12).fit_whitening(torch.randn(4, 16))
    with pytest.raises(ConfigError, match="at least 2"):
        CaptionPooling(16, 12, pooling="whitened").fit_whitening(torch.randn(1, 16))


def test_fit_on_captions_pools_in_chunks_like_all_at_once():
    """The pre-training fit encodes captions chunk by chunk and keeps only the pooled vectors:
    the same whitening as pooling every caption at once (float32 pooling, float64 fit)."""
    torch.manual_seed(0)
    states = {f"caption {i}": torch.randn(1, 5, 16) for i in range(10)}
    masks = {name: torch.ones(1, 5, dtype=torch.bool) for name in states}

    def encode(captions):
        return torch.cat([states[c] for c in captions]), torch.cat([masks[c] for c in captions])

    chunked = TemporalConditioning(16, 12, pooling="whitened")
    summary = chunked.fit_on_captions(list(states), encode, chunk_size=3)
    assert summary["captions"] == 10 and not chunked.needs_fit
    whole = CaptionPooling(16, 12, pooling="whitened")
    whole.fit_whitening(whole.pooled_for_whitening(*encode(list(states))))
    torch.testing.assert_close(chunked.caption.whitening_matrix, whole.whitening_matrix, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked.caption.whitening_mean, whole.whitening_mean, rtol=1e-6, atol=1e-6)


def test_prepare_fits_once_and_needs_a_data_module_with_captions():
    class Captions:
        def train_captions(self):
            return ["a red circle", "a blue square", "a green star"]

    def encode(captions):
        torch.manual_seed(len(captions))
        return torch.randn(len(captions), 4, 16), torch.ones(len(captions), 4, dtype=torch.bool)

    conditioning = TemporalConditioning(16, 12, pooling="whitened")
    with pytest.raises(ConfigError, match="train_captions"):
        conditioning.prepare(object(), encode)
    conditioning.prepare(Captions(), encode)
    fitted = conditioning.caption.whitening_matrix.clone()
    conditioning.prepare(Captions(), lambda captions: pytest.fail("a fitted conditioning must not refit"))
    assert torch.equal(conditioning.caption.whitening_matrix, fitted)
    TemporalConditioning(16, 12).prepare(object(), encode)  # mean pooling: nothing to fit
