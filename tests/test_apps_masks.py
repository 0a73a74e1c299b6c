"""Masks and <C, M> conditioning of the applications (paper Sec. 4.2): shapes, semantics, seeding."""

from __future__ import annotations

import pytest
import torch

from lumiere.apps.conditioning import (
    cinemagraph_conditioning,
    fit_to_model,
    image_to_video_conditioning,
    inpainting_conditioning,
    outpainting_conditioning,
)
from lumiere.apps.masks import (
    MASK_KINDS,
    TrainingMaskSampler,
    border_keep_mask,
    box_keep_mask,
    first_frame_mask,
    region_from_box,
    static_region_mask,
)
from lumiere.errors import ConfigError


def test_image_to_video_conditioning_is_the_first_frame_then_blank_frames():
    image = torch.rand(2, 3, 8, 8) * 2 - 1
    cond_video, mask = image_to_video_conditioning(image, num_frames=4)
    assert cond_video.shape == (2, 3, 4, 8, 8) and mask.shape == (2, 1, 4, 8, 8)
    assert torch.equal(cond_video[:, :, 0], image)
    assert torch.all(cond_video[:, :, 1:] == 0) and torch.all(mask[:, :, 1:] == 0)
    assert torch.all(mask[:, :, 0] == 1)


def test_box_mask_generates_inside_the_box_on_every_frame_and_keeps_the_rest():
    mask = box_keep_mask(3, 10, 12, (2, 1, 5, 4))  # x0, y0, x1, y1
    assert mask.shape == (1, 3, 10, 12)
    assert torch.all(mask[:, :, 1:4, 2:5] == 0)
    assert mask.sum() == 3 * (10 * 12 - 3 * 3)


def test_inpainting_conditioning_zeroes_exactly_the_unknown_pixels():
    video = torch.rand(1, 3, 4, 8, 8) + 0.5  # no zero pixels of its own
    keep = box_keep_mask(4, 8, 8, (0, 0, 4, 4))[None]
    cond_video, mask = inpainting_conditioning(video, keep)
    assert torch.equal(cond_video == 0, (mask == 0).expand_as(cond_video))
    assert torch.equal(cond_video[mask.expand_as(video) == 1], video[mask.expand_as(video) == 1])


def test_outpainting_pads_to_a_square_canvas_with_the_video_in_the_middle():
    video = torch.rand(1, 3, 4, 6, 10) + 0.5
    cond_video, mask = outpainting_conditioning(video, (1, 1, 2, 2))  # canvas 8 x 14 -> square 14 x 14
    assert cond_video.shape == (1, 3, 4, 14, 14)
    assert mask.sum() == 4 * 6 * 10
    rows, cols = torch.nonzero(mask[0, 0, 0], as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 9, 2, 11)
    assert torch.equal(cond_video[:, :, :, 4:10, 2:12], video)


def test_border_mask_generates_the_border_only():
    mask = border_keep_mask(2, 8, 8, (1, 2, 3, 0))
    assert torch.all(mask[:, :, 1:6, 3:] == 1) and mask.sum() == 2 * 5 * 5


def test_cinemagraph_mask_keeps_frame_zero_and_the_outside_of_the_region():
    image = torch.rand(3, 8, 8) + 0.5
    region = region_from_box(8, 8, (2, 2, 6, 6))
    cond_video, mask = cinemagraph_conditioning(image, region, num_frames=4)
    assert torch.all(mask[:, :, 0] == 1)
    assert torch.all(mask[0, 0, 1:, 2:6, 2:6] == 0)
    assert mask[0, 0, 1:].sum() == 3 * (64 - 16)
    # C is the image duplicated over time (masked): every kept pixel is the image's pixel.
    assert torch.equal(cond_video[0, :, 0], image)
    assert torch.equal(static_region_mask(4, region), mask[0])


def test_boxes_outside_the_frame_are_rejected():
    with pytest.raises(ConfigError, match="box"):
        box_keep_mask(2, 8, 8, (4, 4, 9, 6))
    with pytest.raises(ConfigError, match="box"):
        box_keep_mask(2, 8, 8, (4, 4, 4, 6))


def test_training_masks_are_binary_reproducible_from_a_seed_and_cover_every_kind():
    sampler = TrainingMaskSampler()
    first, kinds = sampler(64, 8, 16, 16, generator=torch.Generator().manual_seed(3))
    second, _ = sampler(64, 8, 16, 16, generator=torch.Generator().manual_seed(3))
    assert first.shape == (64, 1, 8, 16, 16)
    assert torch.equal(first, second)
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert set(kinds) == set(MASK_KINDS)
    for mask, kind in zip(first, kinds):
        if kind == "image_to_video":
            assert torch.equal(mask[0], first_frame_mask(8, 16, 16)[0])
        if kind == "cinemagraph":
            assert torch.all(mask[:, 0] == 1) and mask[:, 1:].mean() < 1
        if kind == "none":
            assert mask.sum() == 0
        if kind in ("inpaint_box", "outpaint"):  # the same static mask on every frame, something unknown
            assert torch.equal(mask, mask[:, :1].expand_as(mask)) and 0 < mask.mean() < 1


def test_training_mask_kinds_follow_the_configured_probabilities():
    sampler = TrainingMaskSampler({"image_to_video": 3.0, "none": 1.0, "outpaint": 0.0})
    _, kinds = sampler(400, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert set(kinds) == {"image_to_video", "none"}
    assert 0.68 < kinds.count("image_to_video") / 400 < 0.82
    with pytest.raises(ConfigError, match="unknown mask kinds"):
        TrainingMaskSampler({"video_prediction": 1.0})


def test_fit_to_model_keeps_the_mask_binary_and_known_colours_undarkened():
    """Resizing <C, M> must not blend the grey of unknown pixels into known ones."""
    video = torch.full((1, 3, 2, 24, 24), 0.8)
    keep = box_keep_mask(2, 24, 24, (6, 6, 18, 18))[None]
    cond_video, mask = inpainting_conditioning(video, keep)
    small_c, small_m = fit_to_model(cond_video, mask, 16)
    assert small_c.shape == (1, 3, 2, 16, 16) and set(small_m.unique().tolist()) == {0.0, 1.0}
    known = small_m.expand_as(small_c) == 1
    assert torch.allclose(small_c[known], torch.tensor(0.8), atol=1e-5)
    assert torch.all(small_c[~known] == 0)


def test_per_sample_training_masks_depend_on_their_own_generator_only():
    """Sample i's mask comes from generators[i] alone: batch position and neighbours do not matter."""
    sampler = TrainingMaskSampler()
    seeds = [5, 6, 7, 8]
    batch, _ = sampler.per_sample([torch.Generator().manual_seed(s) for s in seeds], 8, 16, 16)
    alone, _ = sampler.per_sample([torch.Generator().manual_seed(7)], 8, 16, 16)
    assert torch.equal(batch[2], alone[0])
    swapped, _ = sampler.per_sample([torch.Generator().manual_seed(s) for s in reversed(seeds)], 8, 16, 16)
    assert torch.equal(swapped.flip(0), batch)
