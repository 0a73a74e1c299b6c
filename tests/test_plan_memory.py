"""The memory planner (lumiere.plan): parameter counts, the fake step against real steps, checkpointing,
sharding, the fit search and its command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from lumiere.models import STUNet
from lumiere.models.t2i import build_unet
from lumiere.plan import ModelSpec, StepShape, TrainingSetup, largest_fitting, measure_fake_step, plan_memory, run_step
from lumiere.plan.__main__ import main
from lumiere.plan.budget import GiB, count_parameters
from lumiere.plan.fake_step import build_meta_network

TINY = ModelSpec("if_stage1_tiny", "stunet", {"sample_size": 16})
SMALL_SHAPE = StepShape(batch=1, frames=8, resolution=16, text_tokens=8)  # N = 4 for the tiny U-Net: 8 frames is the shortest clip
ALL_SCALES = (1.0, 1.0)


@pytest.fixture(scope="module")
def tiny_plan():
    """The plan of TINY at SMALL_SHAPE on one GPU (a fake step takes seconds: shared by the tests below)."""
    return plan_memory(TINY, SMALL_SHAPE)


def test_parameter_counts_equal_a_real_model():
    torch.manual_seed(0)
    real = STUNet(build_unet("if_stage1_tiny", sample_size=16))
    counts = count_parameters(build_meta_network(TINY), TrainingSetup())
    assert counts.frozen == sum(p.numel() for p in real.unet.parameters())
    assert counts.trainable == sum(p.numel() for p in real.trainable_parameters())
    assert counts.frozen_dtype == torch.float32


def test_if_i_xl_width_has_if_i_xl_size():
    counts = count_parameters(build_meta_network(ModelSpec("if_i_xl_width", "per_frame_2d")), TrainingSetup())
    assert abs(counts.frozen / 4.3e9 - 1) < 0.01  # IF-I-XL's published 4.3B, to the two digits it is given with


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fake_step_counts_what_a_real_step_allocates(precision):
    # The same operators on the same shapes: fake and real tensors must be charged the same bytes.
    # A fake kernel that sized an output differently from the real one would show here; 1% leaves
    # room for nothing else, since both runs charge identical allocation sizes.
    torch.manual_seed(0)
    real = run_step(STUNet(build_unet("if_stage1_tiny", sample_size=16)), SMALL_SHAPE, precision)
    fake = measure_fake_step(TINY, SMALL_SHAPE, precision)
    assert fake.peaks[ALL_SCALES] == pytest.approx(real.peaks[ALL_SCALES], rel=0.01)
    assert fake.saved_after_forward == pytest.approx(real.saved_after_forward, rel=0.01)
    # every trainable weight's float32 gradient, each rounded up to the allocator's 512-byte blocks
    trainable = STUNet(build_unet("if_stage1_tiny")).trainable_parameters()
    assert fake.gradient_bytes == sum(-(-p.numel() * 4 // 512) * 512 for p in trainable)


def test_an_ssr_step_is_planned_with_its_noise_level_and_low_res_channels():
    # The SSR (Sec. 3.2): an IF stage-II U-Net (low-res frames concatenated, the augmentation level as
    # class labels) inflated without temporal resampling, planned like the base and charged as a real step.
    spec = ModelSpec("if_stage2_tiny", "stunet", {"sample_size": 32}, {"temporal_resampling": False})
    shape = StepShape(batch=1, frames=6, resolution=32, text_tokens=8)  # any frame count: time is not resampled
    torch.manual_seed(0)
    real = run_step(STUNet(build_unet("if_stage2_tiny"), temporal_resampling=False), shape, "bf16-mixed")
    fake = measure_fake_step(spec, shape, "bf16-mixed")
    assert fake.peaks[ALL_SCALES] == pytest.approx(real.peaks[ALL_SCALES], rel=0.01)
    assert plan_memory(spec, shape).total > 0


_RSS_SCRIPT = textwrap.dedent("""
    import gc, json, torch
    from lumiere.models import STUNet
    from lumiere.models.t2i import build_unet
    from lumiere.plan import StepShape, run_step

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def peak_rss():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

    torch.manual_seed(0)
    net = STUNet(build_unet("if_stage1_tiny", sample_size=32))
    shape = StepShape(batch=2, frames=16, resolution=32, text_tokens=8)
    run_step(net, shape, "bf16-mixed")  # warm-up: kernels, thread pools, the allocator's own tables
    net.zero_grad(set_to_none=True)
    gc.collect()
    before = rss()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    run_step(net, shape, "bf16-mixed")
    print(json.dumps({"rss_growth": peak_rss() - before}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's resettable peak RSS")
def test_fake_step_matches_the_peak_rss_of_a_real_cpu_step():
    # An independent measure: the real step's peak resident memory in a fresh process, with glibc
    # serving every allocation >= 64 KiB by mmap (returned to the system when freed, so RSS follows
    # the live tensors). Within 15%: allocations under 64 KiB come from arenas that keep freed
    # memory, every mmap rounds up to 4 KiB pages, and the interpreter adds a little; at ~150 MB
    # these are a few percent (measured 1-3%).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT], capture_output=True, text=True, env=env, check=True)
    rss_growth = json.loads(out.stdout.strip().splitlines()[-1])["rss_growth"]
    spec = ModelSpec("if_stage1_tiny", "stunet", {"sample_size": 32})
    fake = measure_fake_step(spec, StepShape(batch=2, frames=16, resolution=32, text_tokens=8), "bf16-mixed")
    assert 0.85 < rss_growth / fake.peaks[ALL_SCALES] < 1.15


def test_checkpointing_lowers_the_activation_estimate(tiny_plan):
    none = tiny_plan
    every = plan_memory(ModelSpec(TINY.source, TINY.variant, TINY.unet_overrides, {}, "all"), SMALL_SHAPE)
    step = "step (activations, their gradients, weight copies, gradients)"
    assert every.lines[step] < 0.7 * none.lines[step]
    assert every.lines["activations kept for backward"] < 0.5 * none.lines["activations kept for backward"]
    assert every.total < none.total
    for name in ("frozen parameters", "trainable parameters", "optimizer state", "EMA"):  # the state is unchanged
        assert every.lines[name] == none.lines[name]


def test_fsdp_shards_the_state_and_frozen_bf16_halves_the_weights(tiny_plan):
    one = tiny_plan
    sharded = plan_memory(TINY, SMALL_SHAPE, TrainingSetup(fsdp_world_size=4))
    half = plan_memory(TINY, SMALL_SHAPE, TrainingSetup(frozen_dtype=torch.bfloat16))
    for name in ("frozen parameters", "trainable parameters", "gradients", "optimizer state", "EMA"):
        assert sharded.lines[name] == one.lines[name] // 4
    assert one.lines["optimizer state"] == 2 * one.lines["trainable parameters"]  # AdamW: two float32 moments
    assert half.lines["frozen parameters"] == one.lines["frozen parameters"] // 2
    # the frozen U-Net stays gathered whole in the root unit: sharding does not shrink the step below its bf16 copy
    assert sharded.lines["step (activations, their gradients, weight copies, gradients)"] >= one.params.frozen * 2


def test_largest_fitting_is_the_boundary_of_the_plan(tiny_plan):
    plan = tiny_plan
    card = (plan.total + 0.3 * GiB) / GiB  # room for some longer clips and more clips per batch
    (fit,) = largest_fitting(TINY, plan, cards_gib=(card,))
    assert fit.largest_frames > SMALL_SHAPE.frames and fit.largest_batch > SMALL_SHAPE.batch
    capacity = card * GiB

    def total(batch, frames):
        return plan_memory(TINY, StepShape(batch, frames, 16, text_tokens=8)).total

    # the answer fits and one more step (4 frames, one clip) does not, by the fake steps themselves;
    # 1% for the line the search extrapolates (linear to within 0.1% at the paper's shape)
    assert total(1, fit.largest_frames) <= capacity * 1.01 and total(1, fit.largest_frames + 4) > capacity * 0.99
    assert total(fit.largest_batch, 8) <= capacity * 1.01 and total(fit.largest_batch + 1, 8) > capacity * 0.99
    (nothing,) = largest_fitting(TINY, plan, cards_gib=(0.5,))  # below the CUDA context alone
    assert (nothing.largest_frames, nothing.largest_batch) == (0, 0)


def test_command_line_prints_the_plan_and_writes_json(tmp_path, capsys):
    out = tmp_path / "plan.json"
    code = main(["--preset", "if_stage1_tiny", "--frames", "8", "--resolution", "16", "--text-tokens", "8",
                 "--checkpointing", "none", "all", "--cards", "1,2", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| total |" in printed and "1 GiB:" in printed
    record = json.loads(out.read_text())
    assert [p["checkpointing"] for p in record["plans"]] == ["none", "all"]
    assert record["plans"][1]["bytes"]["total"] < record["plans"][0]["bytes"]["total"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--preset", "no_such_preset"], "neither a preset"),
        (["--preset", "if_stage1_tiny", "--frames", "10"], "not divisible"),
        (["--preset", "if_stage1_tiny", "--precision", "fp8"], "--precision must be one of"),
        (["--preset", "if_stage1_tiny", "--fsdp-world-size", "0"], "--fsdp-world-size must be >= 1"),
        (["--preset", "if_stage1_tiny", "--block-out-channels", "16,x"], "comma-separated integers"),
        (["--preset", "if_stage1_tiny", "--precision", "32-true", "--frozen-dtype", "bf16", "--frames", "8"],
         "need a mixed precision"),
        (["--preset", "if_stage1_tiny", "--checkpointing", "{bad"], "not valid JSON"),
        (["--preset", "/no/such/folder/config.json"], "no U-Net config"),
        (["--preset", "if_stage1_tiny", "--text-encoder", "/no/such/t5"], "--text-encoder '/no/such/t5' is neither"),
        (["--preset", "if_stage1_tiny", "--text-encoder", "-5"], "whole non-negative number"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    assert main([*argv, "--no-fit", "--resolution", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_unet_config_folder_is_read_without_weights(tmp_path):
    unet = build_unet("if_stage1_tiny")
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps(dict(unet.config)))
    counts = count_parameters(build_meta_network(ModelSpec(str(tmp_path), "per_frame_2d")), TrainingSetup())
    assert counts.frozen == sum(p.numel() for p in unet.parameters())


def test_text_encoder_is_counted_from_its_config_and_added_to_the_resident_weights(tiny_plan, tmp_path):
    from transformers import T5Config, T5EncoderModel

    from lumiere.plan.text_encoder import text_encoder_parameters

    config = T5Config(d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, vocab_size=100,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    real = sum(p.numel() for p in T5EncoderModel(config).parameters())
    (tmp_path / "text_encoder").mkdir()
    config.save_pretrained(tmp_path / "text_encoder")  # the layout of an IF pipeline folder
    assert text_encoder_parameters(str(tmp_path)) == real
    assert text_encoder_parameters(str(tmp_path / "text_encoder" / "config.json")) == real
    assert text_encoder_parameters("none") == 0 and text_encoder_parameters("1e6") == 10**6
    assert abs(text_encoder_parameters("t5-v1_1-xxl") / 4.76e9 - 1) < 0.01  # T5-XXL's encoder: 4.76B

    one = plan_memory(TINY, SMALL_SHAPE, TrainingSetup(text_encoder_params=real))
    assert one.lines["text encoder"] == real * 4  # float32, as the frozen U-Net
    assert one.total == tiny_plan.total + real * 4
    bf16 = plan_memory(TINY, SMALL_SHAPE, TrainingSetup(frozen_dtype=torch.bfloat16, text_encoder_params=real))
    assert bf16.lines["text encoder"] == real * 2
    sharded = plan_memory(TINY, SMALL_SHAPE, TrainingSetup(fsdp_world_size=4, text_encoder_params=real))
    without = plan_memory(TINY, SMALL_SHAPE, TrainingSetup(fsdp_world_size=4))
    assert sharded.lines["text encoder"] == real * 4 // 4
    step = "step (activations, their gradients, weight copies, gradients)"
    assert sharded.lines[step] == without.lines[step] + real * 2  # gathered in bf16 with the root unit
