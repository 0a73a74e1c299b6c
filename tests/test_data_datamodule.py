"""VideoDataModule: batch contract, frame stride, SR pairs, image mode, exact splits over
ranks x workers, resampled epochs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import webdataset as wds

from lumiere.data import VideoDataLoader, VideoDataModule
from lumiere.data.dataset import assign_shards
from lumiere.data.decoders import decode_frames
from lumiere.errors import ConfigError, InputFileError

from data_fixtures import good_sample, tiny_synthetic, write_numbered_shards, write_shard


def _all_batches(loader) -> list[dict]:
    return list(loader)


def _decoded_source(root, key: str, entry: str = "mp4") -> torch.Tensor:
    """All frames of one stored clip, as (3, T, H, W) in [-1, 1]."""
    shards = sorted(str(p) for p in (root / "val").glob("*.tar"))
    sample = next(s for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False) if s["__key__"] == key)
    frames, _ = decode_frames(sample[entry], list(range(16)))
    return frames.permute(3, 0, 1, 2).float() / 127.5 - 1.0


def test_batches_follow_the_contract_and_sample_every_second_frame():
    root = tiny_synthetic()
    dm = VideoDataModule(root / "train", root / "val", num_frames=6, target_fps=8, resolution=32, batch_size=2, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (2, 3, 6, 32, 32) and batch["video"].dtype == torch.float32
    assert batch["video"].min() >= -1.0 and batch["video"].max() <= 1.0 and batch["video"].std() > 0.05
    assert batch["frame_stride"].dtype == torch.long and batch["frame_stride"].tolist() == [2, 2]
    assert batch["fps"].dtype == torch.float32 and batch["fps"].tolist() == [8.0, 8.0]
    assert len(batch["caption"]) == len(batch["key"]) == 2 and "background" in batch["caption"][0]
    assert set(batch["labels"]) >= {"shape", "color", "motion", "speed"} and len(batch["labels"]["shape"]) == 2
    assert "video_hr" not in batch

    # validation takes the centred clip: 6 frames at stride 2 span 11 of 16 -> start 2
    val = next(iter(dm.val_dataloader()))
    source = _decoded_source(root, val["key"][0])
    torch.testing.assert_close(val["video"][0], source[:, 2:13:2])


def test_high_resolution_twin_has_the_same_frame_indices():
    root = tiny_synthetic()
    dm = VideoDataModule(root / "train", root / "val", num_frames=5, frame_stride=3, resolution=32, hr_resolution=64,
                         batch_size=2, num_workers=0)
    val = next(iter(dm.val_dataloader()))
    assert val["video"].shape == (2, 3, 5, 32, 32) and val["video_hr"].shape == (2, 3, 5, 64, 64)
    hr_source = _decoded_source(root, val["key"][0], "hr.mp4")
    torch.testing.assert_close(val["video_hr"][0], hr_source[:, 1:14:3])  # span 13 of 16 -> start 1
    # the twin is the same scene: pooled to 32 px it matches the base clip
    pooled = torch.nn.functional.avg_pool3d(val["video_hr"], kernel_size=(1, 2, 2))
    assert (pooled - val["video"]).abs().mean() < 0.05
    # training takes a random offset, still shared by both resolutions
    batch = next(iter(dm.train_dataloader()))
    pooled = torch.nn.functional.avg_pool3d(batch["video_hr"], kernel_size=(1, 2, 2))
    assert (pooled - batch["video"]).abs().mean() < 0.05


def test_missing_hr_entry_is_a_setup_error_naming_the_key():
    root = tiny_synthetic(hr_size=None)
    dm = VideoDataModule(root / "train", root / "val", num_frames=4, hr_resolution=64, num_workers=0)
    with pytest.raises(ConfigError, match="hr.mp4"):
        dm.setup("fit")


def test_image_mode_draws_single_frames_from_each_clip():
    root = tiny_synthetic()
    dm = VideoDataModule(root / "train", root / "val", image_mode=True, frames_per_clip=3, resolution=16,
                         batch_size=6, num_workers=0)
    batches = _all_batches(dm.train_dataloader())
    videos = torch.cat([b["video"] for b in batches])
    keys = [k for b in batches for k in b["key"]]
    assert videos.shape == (12 * 3, 3, 1, 16, 16)
    assert len(set(keys)) == 36 and len({k.split("/")[0] for k in keys}) == 12



def test_image_mode_training_batches_mix_frames_of_many_clips():
    # One clip yields frames_per_clip frames in a row; without a frame-level shuffle a batch of 6
    # held 2 clips. With it, the frames of a clip spread over the epoch's batches.
    root = tiny_synthetic()
    dm = VideoDataModule(root / "train", root / "val", image_mode=True, frames_per_clip=3, resolution=16,
                         batch_size=6, num_workers=0, shuffle_buffer=36)
    batches = _all_batches(dm.train_dataloader())
    clips_per_batch = [len({key.split("/")[0] for key in b["key"]}) for b in batches]
    assert sum(clips_per_batch) / len(clips_per_batch) > 4.0, clips_per_batch
    keys = [k for b in batches for k in b["key"]]
    assert len(set(keys)) == 36  # still every frame once per epoch

def test_resize_and_centre_crop_to_a_rectangle():
    root = tiny_synthetic()
    dm = VideoDataModule(root / "train", root / "val", num_frames=2, resolution=(16, 8), batch_size=1, num_workers=0)
    assert next(iter(dm.val_dataloader()))["video"].shape == (1, 3, 2, 16, 8)


def test_missing_shards_fail_at_setup_in_one_line(tmp_path):
    dm = VideoDataModule(str(tmp_path / "nope"), num_frames=4, num_workers=0)
    with pytest.raises(InputFileError, match="shard not found"):
        dm.setup("fit")
    with pytest.raises(ConfigError):
        VideoDataModule(str(tmp_path), frame_stride=2, target_fps=8)


def test_assign_shards_partitions_for_any_number_of_workers():
    for num_shards in (1, 2, 3, 5, 8):
        shards = [f"s{i}" for i in range(num_shards)]
        for total in (1, 2, 3, 4, 6):
            per_shard_samples = 7
            covered = []
            for g in range(total):
                for shard, modulus, remainder in assign_shards(shards, g, total):
                    covered += [(shard, i) for i in range(per_shard_samples) if i % modulus == remainder]
            assert sorted(covered) == sorted((s, i) for s in shards for i in range(per_shard_samples))


@pytest.mark.filterwarnings("ignore:training with one pass", "ignore:.*split at the sample level")
# 3 shards < 2 ranks x 2 workers: sample-level split; persistent workers advance their own epoch
@pytest.mark.parametrize("num_shards, persistent", [(6, False), (3, False), (6, True)])
def test_each_sample_once_per_epoch_across_ranks_and_workers(tmp_path, num_shards, persistent):
    write_numbered_shards(tmp_path, num_shards=num_shards, per_shard=5, num_frames=4)
    expected = sorted(f"s{s:02d}_{i:03d}" for s in range(num_shards) for i in range(5))
    loaders = [
        VideoDataModule(str(tmp_path), num_frames=4, batch_size=2, num_workers=2, shuffle_buffer=4,
                        persistent_workers=persistent, rank=rank, world_size=2).train_dataloader()
        for rank in range(2)
    ]
    orders = []
    for _epoch in range(2):  # the second pass reshuffles shards and samples, still exactly once
        seen = [[k for batch in loader for k in batch["key"]] for loader in loaders]
        assert sorted(seen[0] + seen[1]) == expected
        assert seen[0] and seen[1]  # no rank left without data
        orders.append(seen[0] + seen[1])
    assert orders[0] != orders[1]


def test_epoch_length_gives_every_rank_the_same_number_of_batches(tmp_path):
    write_numbered_shards(tmp_path, num_shards=1, per_shard=3, num_frames=4)
    for rank in range(2):
        dm = VideoDataModule(str(tmp_path), num_frames=4, batch_size=2, num_workers=2, epoch_length=5,
                             rank=rank, world_size=2)
        loader = dm.train_dataloader()
        batches = _all_batches(loader)
        assert len(loader) == 5 and len(batches) == 5
        assert all(len(b["key"]) == 2 for b in batches)


def test_video2dataset_shards_take_the_caption_from_json(tmp_path):
    import json

    sample = good_sample("000000001", num_frames=4, caption=None)
    sample["json"] = json.dumps({"caption": "a bar sliding", "url": "http://example.com/v.mp4"}).encode()
    write_shard(tmp_path / "00000.tar", [sample])
    dm = VideoDataModule(str(tmp_path / "00000.tar"), num_frames=4, batch_size=1, num_workers=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["caption"] == ["a bar sliding"] and batch["labels"] == {}


def test_uint8_batches_finished_on_the_device_equal_float_batches():
    """Under a Trainer on an accelerator the workers send uint8; the data module's
    on_after_batch_transfer hook turns them into the same float batch."""
    root = tiny_synthetic()
    kwargs = dict(num_frames=4, resolution=32, hr_resolution=64, batch_size=2, num_workers=0)
    reference = next(iter(VideoDataModule(root / "train", root / "val", **kwargs).val_dataloader()))
    dm = VideoDataModule(root / "train", root / "val", **kwargs)
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)),
                                 global_rank=0, world_size=1, current_epoch=0)
    loader = dm.val_dataloader()
    assert isinstance(loader, VideoDataLoader) and loader.uint8_video
    batch = next(iter(loader))
    b, c, t, h, w = reference["video"].shape
    assert batch["video"].dtype == torch.uint8 and batch["video"].shape == (b, t, h, w, c)
    batch = dm.on_after_batch_transfer(batch, 0)
    torch.testing.assert_close(batch["video"], reference["video"], atol=1e-6, rtol=0)
    torch.testing.assert_close(batch["video_hr"], reference["video_hr"], atol=1e-6, rtol=0)
    assert batch["key"] == reference["key"]


def test_loader_resumes_mid_epoch_at_the_first_unseen_batch(tmp_path):
    """state_dict after k batches + load_state_dict on a fresh loader -> batches k.. of the same
    epoch (the stream depends only on seed, epoch and the worker layout)."""
    write_numbered_shards(tmp_path, num_shards=4, per_shard=4, num_frames=4)

    def make_loader():
        return VideoDataModule(str(tmp_path), num_frames=4, batch_size=2, num_workers=2, shuffle_buffer=4,
                               seed=5).train_dataloader()

    full = [batch["key"] for batch in make_loader()]
    interrupted = make_loader()
    stream = iter(interrupted)
    seen = [next(stream)["key"] for _ in range(3)]
    state = interrupted.state_dict()
    del stream
    assert seen == full[:3] and state["epoch"] == 0 and state["batches"] == 3
    resumed = make_loader()
    resumed.load_state_dict(state)
    assert [batch["key"] for batch in resumed] == full[3:]
    assert len(list(resumed)) == len(full)  # only that epoch resumes: the next pass is whole


def test_train_captions_are_the_training_clips_captions_read_without_decoding():
    root = tiny_synthetic()
    dm = VideoDataModule(root / "train", num_frames=6, target_fps=8, resolution=32, batch_size=4, num_workers=0)
    captions = dm.train_captions()
    loaded = [caption for batch in dm.train_dataloader() for caption in batch["caption"]]
    assert len(captions) == 12 and sorted(captions) == sorted(loaded)
    assert dm.train_captions(limit=5) == captions[:5]
