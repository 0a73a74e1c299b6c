"""Cached text embeddings (issue 21, item 3): the store command, and training that never loads the encoder."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lumiere.errors import ConfigError, InputFileError
from lumiere.models import FrozenTextEncoder, build_tiny_text_encoder
from lumiere.training.text_cache import (
    INDEX_NAME,
    TextCacheStore,
    build_text_cache,
    caption_key,
    main,
    text_encoder_fingerprint,
)

from data_fixtures import good_sample, write_shard
from training_helpers import compose_config, make_tiny_t2i_workspace

CAPTIONS = ["a red circle moving right", "a blue square rotating", "a red circle moving right", "a green star"]
# bf16 keeps 8 significant bits: rounding moves a value by at most 2**-9 of it; the fresh encoder call
# runs other batch shapes than the cached one (float32 sums in another order, ~1e-7 relative), so
# allow one bf16 step (2**-8) relative plus a float32-sized absolute slack near zero.
BF16_RTOL, BF16_ATOL = 2.0**-8, 1e-6


def _encoder(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    build_tiny_text_encoder(trainable=False).save_pretrained(folder)
    return folder


def _shards(folder: Path, captions: list[str], name: str = "train-000000.tar") -> Path:
    samples = [good_sample(f"s{i:03d}", num_frames=2, caption=c) for i, c in enumerate(captions)]
    samples.append(good_sample("nocaption", num_frames=2, caption=None))  # skipped, as the loader skips it
    write_shard(folder / name, samples)
    return folder


def test_the_command_encodes_each_caption_once_with_the_empty_one_in_bf16(tmp_path, capsys):
    encoder_dir = _encoder(tmp_path / "t5")
    shards = _shards(tmp_path / "shards", CAPTIONS)
    store_dir = tmp_path / "cache"
    assert main(["--shards", str(shards), "--text-encoder", str(encoder_dir), "--out", str(store_dir), "--quiet"]) == 0
    assert "4 distinct captions (with the empty one): 4 encoded" in capsys.readouterr().out

    store = TextCacheStore(store_dir)
    distinct = ["", *dict.fromkeys(CAPTIONS)]
    assert len(store) == len(distinct) and all(caption_key(c) in store for c in distinct)
    encoder = FrozenTextEncoder.from_pretrained(encoder_dir)
    assert store.encoder["fingerprint"] == text_encoder_fingerprint(encoder)
    states, masks = store.lookup([caption_key(c) for c in distinct])
    assert states.dtype == torch.bfloat16 and states.shape == (len(distinct), encoder.max_length, encoder.dim)
    with torch.no_grad():
        hidden, mask = encoder(distinct)
    assert torch.equal(masks, mask)  # padded to max_length, not trimmed: the mask says which tokens are real
    torch.testing.assert_close(states.float(), hidden, rtol=BF16_RTOL, atol=BF16_ATOL)


def test_a_second_run_encodes_only_what_the_store_lacks_and_a_killed_run_leaves_it_readable(tmp_path, monkeypatch):
    encoder = FrozenTextEncoder.from_pretrained(_encoder(tmp_path / "t5"))
    store_dir = tmp_path / "cache"
    common = dict(encoder_dir=tmp_path / "t5", part_size=2, batch_size=1)
    first = build_text_cache(CAPTIONS, encoder, store_dir, **common)
    assert first == {"captions": 4, "encoded": 4, "stored": 4}
    assert len(json.loads((store_dir / INDEX_NAME).read_text())["parts"]) == 2

    import lumiere.training.text_cache as text_cache

    real_write_part = text_cache.write_part
    calls = []

    def killed_after_one_part(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt  # the run is killed while its second part is pending
        calls.append(1)
        real_write_part(*args, **kwargs)

    monkeypatch.setattr(text_cache, "write_part", killed_after_one_part)
    more = [f"caption number {i}" for i in range(4)]
    with pytest.raises(KeyboardInterrupt):
        build_text_cache(more, encoder, store_dir, **common)
    assert len(TextCacheStore(store_dir)) == 6  # the part written before the kill is in, nothing half-written
    assert not list(store_dir.glob("*.partial"))
    monkeypatch.setattr(text_cache, "write_part", real_write_part)
    resumed = build_text_cache([*CAPTIONS, *more], encoder, store_dir, **common)
    assert resumed == {"captions": 8, "encoded": 2, "stored": 8}
    assert len(TextCacheStore(store_dir)) == 8
    (store_dir / "part-000000.safetensors").write_bytes(b"damaged on disk")
    with pytest.raises(InputFileError, match="part-000000.safetensors is unreadable"):
        TextCacheStore(store_dir)


def test_a_store_of_another_encoder_or_dtype_is_refused_unless_overwritten(tmp_path, capsys):
    shards = str(_shards(tmp_path / "shards", CAPTIONS))
    first, other = str(_encoder(tmp_path / "t5a", seed=0)), str(_encoder(tmp_path / "t5b", seed=1))
    out = str(tmp_path / "cache")
    assert main(["--shards", shards, "--text-encoder", first, "--out", out, "--quiet"]) == 0
    capsys.readouterr()
    for argv in (["--text-encoder", other], ["--text-encoder", first, "--dtype", "fp16"]):
        assert main(["--shards", shards, *argv, "--out", out, "--quiet"]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("error:") and "\n" not in error and "--overwrite" in error
    assert main(["--shards", shards, "--text-encoder", other, "--dtype", "fp16", "--out", out, "--quiet",
                 "--overwrite"]) == 0
    store = TextCacheStore(out)
    assert store.storage_dtype == torch.float16
    assert store.encoder["fingerprint"] == text_encoder_fingerprint(FrozenTextEncoder.from_pretrained(other))


# ---------------------------------------------------------------------------------------------- in training


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The tiny benchmark, a tiny T2I export, and a cache of every caption of its train and val shards."""
    root = make_tiny_t2i_workspace(tmp_path_factory.mktemp("text_cache"))
    prompts = root / "val_prompts.txt"
    prompts.write_text("a red circle moving right at medium speed on a plain background\n")  # tiny_stunet's
    data, encoder = root / "data" / "tiny", root / "artifacts" / "t2i" / "text_encoder"
    assert main(["--shards", str(data / "train"), "--shards", str(data / "val"), "--prompts", str(prompts),
                 "--text-encoder", str(encoder), "--out", str(root / "cache"), "--quiet"]) == 0
    return root


def _overrides(root: Path, run: str, *extra: str) -> list[str]:
    return ["experiment=tiny_stunet", f"paths.data_dir={root / 'data'}", f"paths.artifacts_dir={root / 'artifacts'}",
            f"paths.output_dir={root / run}", "logger=csv", "trainer.enable_progress_bar=false", "trainer.max_steps=4",
            "callbacks.model_checkpoint.every_n_train_steps=2", "cpu_threads=1", "model.t2i_path=null",
            f"model.unet_path={root / 'artifacts' / 't2i' / 'unet'}",
            f"model.text_encoder_path={root / 'artifacts' / 't2i' / 'text_encoder'}", *extra]


def refuse_text_encoder(monkeypatch) -> None:
    """Loading or building a T5 encoder from here on fails the test."""
    from transformers import T5EncoderModel

    def refuse(*args, **kwargs):
        raise AssertionError("the text encoder was loaded although model.text_cache is set")

    monkeypatch.setattr(FrozenTextEncoder, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(T5EncoderModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(T5EncoderModel, "__init__", refuse)


@pytest.fixture(scope="module")
def cached_run(workspace):
    """A 4-step STUNet run (one epoch, then validation) on the cache with every way of making a T5 encoder disabled."""
    from lumiere.tasks import train

    monkeypatch = pytest.MonkeyPatch()
    refuse_text_encoder(monkeypatch)
    try:
        cfg = compose_config("train", _overrides(workspace, "cached", f"model.text_cache={workspace / 'cache'}"),
                             workspace / "cached")
        metrics = train(cfg)
    finally:
        monkeypatch.undo()
    return cfg, metrics


def test_training_with_the_cache_never_loads_the_text_encoder(cached_run):
    _, metrics = cached_run
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert "val/loss" in metrics  # validation (its loss and samples) ran on cached states too


def test_the_cache_gives_the_encoders_states_and_fingerprint_and_the_checkpoint_loads_on_the_encoder(workspace,
                                                                                                   cached_run):
    from lumiere.training import load_module_from_checkpoint
    from lumiere.training.base import CHECKPOINT_KEY

    checkpoint_path = workspace / "cached" / "checkpoints" / "last.ckpt"
    # sampling from the checkpoint loads the real encoder (any prompt), whose fingerprint the cache recorded
    module = load_module_from_checkpoint(str(checkpoint_path))
    assert isinstance(module.text_encoder, FrozenTextEncoder)
    stored = torch.load(checkpoint_path, map_location="cpu", weights_only=True)[CHECKPOINT_KEY]["frozen_fingerprints"]
    assert stored["text_encoder"] == module.frozen_fingerprints()["text_encoder"]

    from lumiere.training.text_cache import frozen_text_encoder

    cached = frozen_text_encoder(workspace / "artifacts" / "t2i" / "text_encoder", text_cache=str(workspace / "cache"))
    prompts = ["", "a red circle moving right at medium speed on a plain background"]
    with torch.no_grad():
        live, live_mask = module.text_encoder(prompts)
    states, mask = cached(prompts)
    assert states.dtype == torch.float32 and torch.equal(mask, live_mask)
    torch.testing.assert_close(states, live, rtol=BF16_RTOL, atol=BF16_ATOL)


def test_resuming_with_a_cache_of_another_encoder_is_refused_unless_allowed(workspace, cached_run, tmp_path):
    from hydra.utils import instantiate

    other = _encoder(tmp_path / "other_t5", seed=5)
    captions = [c.strip() for c in (workspace / "val_prompts.txt").read_text().splitlines()]
    build_text_cache(captions, FrozenTextEncoder.from_pretrained(other), tmp_path / "other_cache", encoder_dir=other)
    checkpoint = torch.load(workspace / "cached" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    cfg = compose_config("train", _overrides(workspace, "other", f"model.text_cache={tmp_path / 'other_cache'}"),
                         tmp_path / "run")
    module = instantiate(cfg.model, _convert_="partial")
    with pytest.raises(InputFileError, match="was made with another text encoder") as error:
        module.on_load_checkpoint(checkpoint)
    assert "\n" not in str(error.value) and "allow_frozen_mismatch" in str(error.value)
    module.allow_frozen_mismatch = True
    with pytest.warns(UserWarning, match="loaded anyway"):
        module.on_load_checkpoint(checkpoint)


def test_a_caption_missing_from_the_cache_is_one_line_naming_its_hash_and_the_command(workspace, monkeypatch):
    from lumiere.training.text_cache import frozen_text_encoder

    refuse_text_encoder(monkeypatch)
    cached = frozen_text_encoder(workspace / "artifacts" / "t2i" / "text_encoder", text_cache=str(workspace / "cache"))
    caption = "a caption that is in no shard"
    with pytest.raises(InputFileError) as error:
        cached(["", caption])
    message = str(error.value)
    assert "\n" not in message and caption_key(caption) in message
    assert "python -m lumiere.training.text_cache --shards" in message and "text_cache_missing=encode" in message


def test_text_cache_missing_encode_loads_the_encoder_for_missing_captions_only(workspace, monkeypatch):
    from lumiere.training.text_cache import frozen_text_encoder

    encoder_dir = workspace / "artifacts" / "t2i" / "text_encoder"
    loads = []
    real = FrozenTextEncoder.from_pretrained.__func__

    def counted(cls, *args, **kwargs):
        loads.append(args)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(FrozenTextEncoder, "from_pretrained", classmethod(counted))
    cached = frozen_text_encoder(encoder_dir, text_cache=str(workspace / "cache"), missing="encode")
    cached([""])
    assert loads == []  # every caption was in the cache: no encoder
    prompts = ["", "a caption that is in no shard"]
    states, mask = cached(prompts)
    assert len(loads) == 1
    with torch.no_grad():
        live, live_mask = real(FrozenTextEncoder, encoder_dir)(prompts)
    assert torch.equal(mask, live_mask)
    torch.testing.assert_close(states, live, rtol=BF16_RTOL, atol=BF16_ATOL)


def test_a_cache_named_for_a_stage_that_cannot_read_it_or_lacking_a_validation_prompt_is_refused(workspace):
    from hydra.utils import instantiate

    from lumiere.training.text_cache import check_text_cache_in_use

    cfg = compose_config("train", _overrides(workspace, "val", f"model.text_cache={workspace / 'cache'}",
                                             "model.val_prompts=[a prompt nobody cached]"), workspace / "val")
    module = instantiate(cfg.model, _convert_="partial")
    with pytest.raises(InputFileError, match="validation prompts missing"):
        check_text_cache_in_use(module)
    module.val_prompts = []
    check_text_cache_in_use(module)
    shards_of_other_data = SimpleNamespace(train_captions=lambda limit: ["a caption of another data set"])
    module._trainer = SimpleNamespace(datamodule=shards_of_other_data)  # as Trainer.fit attaches one
    with pytest.raises(InputFileError, match="training captions missing"):
        check_text_cache_in_use(module)
    module._trainer = None
    module.text_encoder = build_tiny_text_encoder(trainable=False)  # as a stage that encodes by itself
    with pytest.raises(ConfigError, match="model.text_cache is set but TextToVideoModule encodes"):
        check_text_cache_in_use(module)


@pytest.mark.slow
def test_the_benchmark_runs_both_variants_and_the_cached_one_holds_no_encoder(tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, str(root / "benchmarks" / "text_cache.py"), "--t5-layers", "1", "--t5-width", "64",
               "--size", "16", "--steps", "1", "--warmup", "0", "--repeats", "1", "--json", str(tmp_path / "out.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| cache / encoder |" in done.stdout
    runs = json.loads((tmp_path / "out.json").read_text())["runs"]
    assert [run["text_encoder"] for run in runs["encoder"] + runs["cache"]] == ["FrozenTextEncoder", "CachedTextEncoder"]
