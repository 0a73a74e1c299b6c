"""Activation checkpointing per block of the STUNet (lumiere.models.checkpointing; issue 21, item 2).

Every policy must give the loss and gradients of the run without checkpointing, recompute exactly
the parts it names (counted by forward calls), and leave the frozen layers without gradients."""

from __future__ import annotations

import pytest
import torch

from lumiere.errors import ConfigError
from lumiere.models import STUNet, build_unet
from lumiere.models.checkpointing import CheckpointPolicy
from lumiere.models.t2i import unet_text_dim

# Recomputation re-runs the same kernels on the same inputs, so results agree to float32 rounding
# of differently scheduled reductions at most: relative 1e-5 on gradients of size ~1e-2..1.
RTOL, ATOL = 1e-5, 1e-7

POLICIES = ["spatial", "temporal", "all", {"spatial": [0], "temporal": [2]}, {"temporal": [1]}, {"spatial": "all"}]


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_unet("if_stage1_tiny").eval()


def _inputs(unet, frames=8, size=16):
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, unet.config.in_channels, frames, size, size, generator=g)
    text = torch.randn(2, 6, unet_text_dim(unet), generator=g)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 3:] = False
    return sample, torch.tensor([17, 640]), text, mask


def _model(unet, **kwargs) -> STUNet:
    torch.manual_seed(0)
    model = STUNet(unet, **kwargs)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero projections: every temporal parameter gets a gradient
        for p in model.trainable_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _loss_and_grads(model: STUNet, inputs):
    model.zero_grad(set_to_none=True)
    loss = model(*inputs).square().mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.trainable_named_parameters()}


def _count_calls(modules: dict[str, torch.nn.Module]) -> tuple[dict[str, int], list]:
    """Forward calls per module, counted when a call starts: a recomputation stops early once it has
    regenerated what backward needs, so a module's forward hook need not run a second time."""
    calls = dict.fromkeys(modules, 0)
    handles = []
    for name, module in modules.items():
        def hook(*_, name=name):
            calls[name] += 1
        handles.append(module.register_forward_pre_hook(hook))
    return calls, handles


@pytest.mark.parametrize("policy", POLICIES, ids=str)
def test_every_policy_gives_the_same_loss_and_gradients(unet, policy):
    inputs = _inputs(unet)
    loss_plain, plain = _loss_and_grads(_model(unet), inputs)
    model = _model(unet, activation_checkpointing=policy)
    loss, grads = _loss_and_grads(model, inputs)
    torch.testing.assert_close(loss, loss_plain, rtol=RTOL, atol=ATOL)
    assert grads.keys() == plain.keys()
    for name in plain:
        torch.testing.assert_close(grads[name], plain[name], rtol=RTOL, atol=ATOL, msg=name)
    assert grads["down_temporal.0.layers.0.blocks.0.spatial_conv.weight"].abs().sum() > 0  # reached through frozen layers
    assert all(p.grad is None for p in model.unet.parameters())


def _probes(model: STUNet) -> dict[str, torch.nn.Module]:
    """One frozen and one temporal module per level (if_stage1_tiny: 3 levels, level 2 the coarsest)."""
    return {
        "spatial0": model.unet.down_blocks[0].resnets[0], "temporal0": model.down_temporal[0].layers[0],
        "spatial1": model.unet.up_blocks[1].resnets[0], "temporal1": model.up_temporal[1].layers[0],
        "spatial2": model.unet.mid_block, "temporal2": model.mid_temporal,
        "resample_spatial0": model.unet.down_blocks[0].downsamplers[0], "resample_temporal0": model.down_temporal[0].resample,
    }


@pytest.mark.parametrize(
    ("policy", "recomputed"),
    [
        ("none", set()),
        # The first frozen layer sees only frozen inputs: it keeps nothing for backward, so nothing to recompute.
        ("spatial", {"spatial1", "spatial2", "resample_spatial0"}),
        ("temporal", {"temporal0", "temporal1", "temporal2", "resample_temporal0"}),
        ({"spatial": [0], "temporal": [2]}, {"resample_spatial0", "temporal2"}),
        ({"temporal": [1]}, {"temporal1"}),
    ],
    ids=str,
)
def test_a_policy_recomputes_exactly_the_blocks_it_names(unet, policy, recomputed):
    model = _model(unet, activation_checkpointing=policy)
    calls, handles = _count_calls(_probes(model))
    model(*_inputs(unet)).square().mean().backward()
    for handle in handles:
        handle.remove()
    assert {name for name, n in calls.items() if n == 2} == recomputed
    assert {name for name, n in calls.items() if n == 1} == set(calls) - recomputed


def test_no_recomputation_without_gradients(unet):
    model = _model(unet, activation_checkpointing="all")
    calls, handles = _count_calls(_probes(model))
    with torch.no_grad():
        model(*_inputs(unet))
    for handle in handles:
        handle.remove()
    assert set(calls.values()) == {1}


def test_gradient_checkpointing_is_the_all_policy(unet):
    model = STUNet(unet, gradient_checkpointing=True)
    assert model.checkpointing == CheckpointPolicy.parse("all", 3) and model.gradient_checkpointing
    model.gradient_checkpointing = False
    assert not model.checkpointing.enabled
    assert not STUNet(unet).gradient_checkpointing  # the paper's default: nothing recomputed
    with pytest.raises(ConfigError, match="set only activation_checkpointing"):
        STUNet(unet, gradient_checkpointing=True, activation_checkpointing="temporal")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("some", "must be one of"),
        ({"spatial": [0], "mid": True}, "unknown keys \\['mid'\\]"),
        ({"temporal": [3]}, "activation_checkpointing.temporal: levels \\[3\\] out of range"),
        ({"spatial": "most"}, "activation_checkpointing.spatial must be 'all', 'none'"),
        (3, "must be a name"),
    ],
)
def test_bad_policies_name_the_key(unet, spec, message):
    with pytest.raises(ConfigError, match=message):
        STUNet(unet, activation_checkpointing=spec)


@pytest.mark.slow
def test_the_benchmark_runs_at_tiny_size():
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "activation_checkpointing.py"
    result = subprocess.run([sys.executable, str(script), "--preset", "if_stage1_tiny", "--size", "16", "--frames", "8",
                             "--reps", "1", "--threads", "1"], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["none"], ["spatial"], ["temporal"], ["all"])]
    assert [row[0] for row in rows] == ["none", "spatial", "temporal", "all"]
    assert all(float(row[2]) == float(row[2]) for row in rows)  # every peak measured (not NaN)
