"""UCF101 zero-shot protocol (paper App. D.2): classes, prompts, apportionment, resumable generation, real statistics."""

import json

import av
import numpy as np
import pytest
import torch

from lumiere.errors import ConfigError, InputFileError
from lumiere.evaluation.ucf101_protocol import (
    apportion,
    build_generation_plan,
    class_prompt,
    class_words,
    compute_ucf101_real_statistics,
    generate_videos_resumable,
    iter_video_batches,
    load_prompt_file,
    load_user_study_prompts,
    ucf101_class_counts,
    ucf101_classes,
    ucf101_prompts,
)
from lumiere.metrics import FrechetVideoDistance


def test_class_table_has_101_classes_and_13320_clips():
    counts = ucf101_class_counts()
    assert len(ucf101_classes()) == 101 and ucf101_classes()[0] == "ApplyEyeMakeup" and ucf101_classes()[-1] == "YoYo"
    assert sum(counts.values()) == 13320
    assert min(counts.values()) == 100 and max(counts.values()) == 167


def test_apportionment_hits_10235_and_follows_the_class_frequencies():
    counts = ucf101_class_counts()
    quotas = apportion(10235, counts)
    assert sum(quotas.values()) == 10235
    for name, n in counts.items():
        assert abs(quotas[name] - 10235 * n / 13320) < 1  # within one video of the exact quota
    # More clips in UCF101 never means fewer generated videos (equal counts may differ by the tie-break).
    assert all(quotas[a] <= quotas[b] for a in counts for b in counts if counts[a] < counts[b])


def test_apportionment_gives_leftovers_to_largest_remainders():
    assert apportion(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert apportion(7, {"a": 5, "b": 3, "c": 2}) == {"a": 4, "b": 2, "c": 1}  # quotas 3.5, 2.1, 1.4


def test_class_words_split_camel_case():
    assert class_words("ApplyEyeMakeup") == "apply eye makeup"
    assert class_words("YoYo") == "yo yo"
    assert class_prompt("PlayingCello") == "a person playing cello"
    assert class_prompt("Rowing", "a video of {words}, 4k") == "a video of rowing, 4k"


def test_prompt_file_tab_and_json_formats(tmp_path):
    tsv = tmp_path / "prompts.tsv"
    tsv.write_text("# comment\nApplyEyeMakeup\ta woman applies eye makeup\napplyeyemakeup\tclose-up of eyeliner\nYoYo\ta kid plays with a yo-yo\n")
    prompts = load_prompt_file(tsv)
    assert prompts == {"ApplyEyeMakeup": ["a woman applies eye makeup", "close-up of eyeliner"], "YoYo": ["a kid plays with a yo-yo"]}
    merged = ucf101_prompts(tsv)
    assert len(merged) == 101 and merged["Archery"] == ["a person archery"] and merged["YoYo"] == ["a kid plays with a yo-yo"]
    js = tmp_path / "prompts.json"
    js.write_text(json.dumps({"Rowing": "a rowing team", "Swing": ["a child on a swing", "swinging"]}))
    assert load_prompt_file(js) == {"Rowing": ["a rowing team"], "Swing": ["a child on a swing", "swinging"]}
    bad = tmp_path / "bad.tsv"
    bad.write_text("NotAClass\tsomething\n")
    with pytest.raises(InputFileError, match="NotAClass"):
        load_prompt_file(bad)


def test_generation_plan_follows_apportionment_with_distinct_seeds():
    plan = build_generation_plan(10235, seed=0)
    assert len(plan) == 10235 and [item.index for item in plan] == list(range(10235))
    per_class = {}
    for item in plan:
        per_class[item.class_name] = per_class.get(item.class_name, 0) + 1
    assert per_class == apportion(10235)
    assert len({item.seed for item in plan}) == 10235
    assert build_generation_plan(10235, seed=0) == plan  # reproducible
    cycled = build_generation_plan(30, prompts={name: ["p0", "p1"] for name in ucf101_classes()}, counts={"YoYo": 1})
    assert [item.prompt for item in cycled[:3]] == ["p0", "p1", "p0"]


class CountingGenerator:
    """generate_fn that records every prompt index it generated and can crash after some calls."""

    def __init__(self, crash_after_calls=None):
        self.calls, self.generated, self.crash_after_calls = 0, [], crash_after_calls

    def __call__(self, prompts, seeds):
        if self.crash_after_calls is not None and self.calls == self.crash_after_calls:
            raise RuntimeError("simulated crash")
        self.calls += 1
        self.generated.extend(seeds)
        videos = torch.stack([torch.full((3, 2, 4, 4), (seed % 200) / 100 - 1) for seed in seeds])
        return videos


def test_generation_resumes_without_redoing_finished_videos(tmp_path):
    plan = build_generation_plan(10, counts={"ApplyEyeMakeup": 3, "YoYo": 2}, seed=1)
    crashing = CountingGenerator(crash_after_calls=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_videos_resumable(plan, crashing, tmp_path, batch_size=3, progress=False)
    finished = set(crashing.generated)
    assert len(finished) == 6
    ledger = json.loads((tmp_path / "ledger.json").read_text())
    assert len(ledger["completed"]) == 6

    resumed = CountingGenerator()
    paths = generate_videos_resumable(plan, resumed, tmp_path, batch_size=3, progress=False)
    assert not finished & set(resumed.generated)  # nothing generated twice
    assert len(resumed.generated) == 4
    assert all(path.is_file() for path in paths)
    first = np.load(paths[0])
    assert first.dtype == np.uint8 and first.shape == (2, 4, 4, 3)
    # A finished plan generates nothing more; all videos load back as (B, C, T, H, W) in [-1, 1].
    idle = CountingGenerator()
    generate_videos_resumable(plan, idle, tmp_path, batch_size=3, progress=False)
    assert idle.calls == 0
    batches = list(iter_video_batches(paths, batch_size=4, num_frames=None))
    assert [b.shape[0] for b in batches] == [4, 4, 2] and batches[0].shape[1:] == (3, 2, 4, 4)
    # Another plan in the same folder is refused rather than mixed in.
    with pytest.raises(ConfigError):
        generate_videos_resumable(plan[:5], idle, tmp_path, progress=False)


def write_tiny_video(path, seed, num_frames=18, size=32):
    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for _ in range(num_frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


class MeanColour(torch.nn.Module):
    feature_dim = 3

    def forward(self, videos):
        return videos.mean(dim=(2, 3, 4))


def test_real_statistics_from_a_class_folder_tree(tmp_path):
    root = tmp_path / "UCF-101"
    for k, folder in enumerate(["ApplyEyeMakeup", "HandstandPushups"]):  # folder spelling differs from classInd
        (root / folder).mkdir(parents=True)
        for j in range(2):
            write_tiny_video(root / folder / f"v_{folder}_g01_c0{j + 1}.avi", seed=10 * k + j)
    metric = FrechetVideoDistance(feature_extractor=MeanColour(), preprocess=False)
    out = compute_ucf101_real_statistics(
        root, tmp_path / "real.npz", metric=metric, classes=["ApplyEyeMakeup", "HandStandPushups"], progress=False
    )
    with np.load(out) as stats:
        assert int(stats["n"]) == 4 and stats["mu"].shape == (3,) and str(stats["variant"]) == metric.variant
    with pytest.raises(InputFileError, match="lacks UCF101 class folders"):
        compute_ucf101_real_statistics(root, tmp_path / "all.npz", metric=metric, progress=False)


def test_user_study_prompts_are_the_papers_109():
    prompts = load_user_study_prompts()
    assert len(prompts) == 109
    assert prompts[0] == "A bear is giving a presentation in classroom."
    assert prompts[-1] == "Yellow flowers swing in wind."
