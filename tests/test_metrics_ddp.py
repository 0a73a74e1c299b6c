"""Two-process DDP (gloo, CPU) gives the single-process FVD and IS: states reduce across ranks."""

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lumiere.metrics import FrechetVideoDistance, VideoInceptionScore


class TinyFeatures(torch.nn.Module):
    """Deterministic features: a fixed linear map of the video's per-frame mean colours.

    Computed in float64 so that a sample's features do not depend on which batch it came in
    (float32 matmuls round differently for different batch shapes).
    """

    feature_dim = 5

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(12, self.feature_dim, dtype=torch.float64)
        with torch.no_grad():
            self.proj.weight.copy_(torch.arange(60.0).view(5, 12).sin())
            self.proj.bias.zero_()

    def forward(self, videos):
        return self.proj(videos.double().mean(dim=(3, 4)).flatten(1))  # (b, c*t) with c=3, t=4


class TinyClassifier(TinyFeatures):
    def forward(self, videos):
        return (3 * super().forward(videos)).softmax(-1)


def dataset():
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(22, 3, 4, 6, 6, generator=generator) * 2 - 1
    fake = (torch.rand(18, 3, 4, 6, 6, generator=generator) * 1.5 - 0.5).clamp(-1, 1)
    return real, fake


def evaluate(real, fake):
    fvd = FrechetVideoDistance(feature_extractor=TinyFeatures(), preprocess=False)
    inception = VideoInceptionScore(classifier=TinyClassifier(), splits=3, seed=0)
    for chunk in real.split(4):
        fvd.update(chunk, real=True)
    for chunk in fake.split(4):
        fvd.update(chunk, real=False)
        inception.update(chunk)
    mean, std = inception.compute()
    return {"fvd": float(fvd.compute()), "is_mean": float(mean), "is_std": float(std), "num_fake": fvd.result()["num_fake"]}


def worker(rank, world_size, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        real, fake = dataset()
        # Uneven shards, as a DistributedSampler without padding would give.
        result = evaluate(real[rank::world_size], fake[rank::world_size])
        if rank == 0:
            with open(out_file, "w") as handle:
                json.dump(result, handle)
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_equals_single_process(tmp_path):
    out_file = tmp_path / "ddp.json"
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(out_file)), nprocs=2, join=True)
    distributed = json.loads(out_file.read_text())
    single = evaluate(*dataset())
    assert distributed["num_fake"] == single["num_fake"] == 18
    # Sums reduced in another order round differently; the FVD is a small difference of traces.
    assert distributed["fvd"] == pytest.approx(single["fvd"], rel=1e-7)
    # float64 features from other batch shapes (per-rank chunks) can differ in the last bit.
    assert distributed["is_mean"] == pytest.approx(single["is_mean"], rel=1e-10)
    assert distributed["is_std"] == pytest.approx(single["is_std"], rel=1e-9)
