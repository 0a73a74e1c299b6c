"""The tokenizer is checked, not trusted (issue 20, item 2): no tokenizer files, or a tokenizer under which
the training captions' words become <unk>, is refused in one line; the folder's max length and mask apply."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch
from test_pipeline_folder import CAPTIONS, stage_kwargs, write_pipeline_folder, write_spiece_tokenizer

from lumiere.errors import InputFileError
from lumiere.models import FrozenTextEncoder
from lumiere.models.text import MAX_UNKNOWN_WORD_FRACTION, load_tokenizer
from lumiere.training import TextToVideoModule


@pytest.fixture(scope="module")
def if_folder(tmp_path_factory):
    return write_pipeline_folder(tmp_path_factory.mktemp("if") / "IF-I-tiny")


@pytest.fixture(scope="module")
def digits_tokenizer(tmp_path_factory):
    """A sentencepiece model that never saw a letter: every caption word is <unk> under it."""
    sentences = [" ".join(str((7 * index + offset) % 1000) for offset in range(8)) for index in range(300)]
    # few pieces: the tiny T5 of the pipeline folder embeds fewer ids than a 200-piece vocabulary has
    return write_spiece_tokenizer(tmp_path_factory.mktemp("digits") / "tokenizer", sentences, vocab_size=24)


def test_a_t5_folder_without_tokenizer_files_is_refused_in_one_line(tmp_path, if_folder):
    encoder_only = tmp_path / "t5"
    shutil.copytree(if_folder / "text_encoder", encoder_only)  # config.json + weights, no tokenizer
    with pytest.raises(InputFileError, match=r"holds no tokenizer \(needs tokenizer_config.json and spiece.model "
                                             r"or tokenizer.json\)") as error:
        FrozenTextEncoder.from_pretrained(encoder_only)
    assert "\n" not in str(error.value) and "model.tokenizer_path" in str(error.value)
    # a tokenizer_config.json alone is no vocabulary either
    (encoder_only / "tokenizer_config.json").write_text('{"tokenizer_class": "T5Tokenizer"}')
    with pytest.raises(InputFileError, match="holds no tokenizer"):
        FrozenTextEncoder.from_pretrained(encoder_only)


def test_max_length_and_mask_follow_the_folders_configuration(tmp_path, if_folder):
    encoder = FrozenTextEncoder.from_pretrained(if_folder)  # a pipeline folder: text_encoder/ + tokenizer/
    assert encoder.max_length == 77
    tokenizer_dir = write_spiece_tokenizer(tmp_path / "tokenizer32", CAPTIONS, model_max_length=32)
    short = FrozenTextEncoder.from_pretrained(if_folder / "text_encoder", tokenizer_path=tokenizer_dir)
    hidden, mask = short(["a red circle moving left slowly on a plain background", ""])
    assert hidden.shape[:2] == mask.shape == (2, 32)
    expected = len(short.tokenizer("a red circle moving left slowly on a plain background")["input_ids"])
    assert mask.sum(1).tolist() == [expected, 1]  # real tokens (pieces + </s>) only; the rest is padding


def test_unknown_word_fraction_counts_the_words_with_an_unknown_piece(if_folder, digits_tokenizer):
    known = FrozenTextEncoder.from_pretrained(if_folder)
    fraction, examples = known.unknown_word_fraction(["a red circle, moving left!", "a blue ñandú"])
    # 8 words; only "ñandú" has characters the caption-trained vocabulary never saw
    assert fraction == pytest.approx(1 / 8) and examples == ["ñandú"]
    assert known.unknown_word_fraction(CAPTIONS)[0] == 0.0
    known.check_vocabulary(CAPTIONS, "the training captions")  # no error

    broken = FrozenTextEncoder.from_pretrained(if_folder / "text_encoder", tokenizer_path=digits_tokenizer)
    assert broken.unknown_word_fraction(CAPTIONS)[0] == 1.0
    with pytest.raises(InputFileError, match=r"maps 100% of the words of the training captions to its unknown token") as error:
        broken.check_vocabulary(CAPTIONS, "the training captions")
    assert "\n" not in str(error.value) and f"at most {MAX_UNKNOWN_WORD_FRACTION:.0%}" in str(error.value)


def test_the_threshold_tolerates_a_few_rare_characters(if_folder):
    encoder = FrozenTextEncoder.from_pretrained(if_folder)
    rare = ["a red circle moving left slowly on a plain background"] * 19 + ["a ñandú"]
    fraction, _ = encoder.unknown_word_fraction(rare)
    assert 0 < fraction <= MAX_UNKNOWN_WORD_FRACTION  # 1 word in 180
    encoder.check_vocabulary(rare, "the training captions")


def test_training_refuses_a_tokenizer_that_maps_the_training_captions_to_unk(if_folder, digits_tokenizer):
    module = TextToVideoModule(t2i_path=str(if_folder), tokenizer_path=str(digits_tokenizer), **stage_kwargs())
    datamodule = SimpleNamespace(train_captions=lambda limit: CAPTIONS[:limit])
    module.trainer = SimpleNamespace(datamodule=datamodule, precision="32-true",
                                     strategy=SimpleNamespace(root_device=torch.device("cpu")))
    with pytest.raises(InputFileError, match="words of the training captions to its unknown token"):
        module.setup("fit")
    good = TextToVideoModule(t2i_path=str(if_folder), **stage_kwargs())
    good.trainer = module.trainer
    good.setup("fit")  # the folder's own tokenizer knows the captions' words


def test_a_tokenizer_with_more_ids_than_the_encoder_embeds_is_refused(tmp_path, if_folder):
    large = write_spiece_tokenizer(tmp_path / "large", [f"word{index} w{index}x" for index in range(400)], vocab_size=300)
    with pytest.raises(InputFileError, match="tokens but the text encoder in .* embeds .*: they do not belong together"):
        FrozenTextEncoder.from_pretrained(if_folder / "text_encoder", tokenizer_path=large)


def test_the_sentencepiece_tokenizer_loads_as_t5s(if_folder):
    tokenizer = load_tokenizer(if_folder / "tokenizer")
    assert type(tokenizer).__name__ == "T5Tokenizer" and tokenizer.unk_token_id == 2 and tokenizer.pad_token_id == 0
    pieces = tokenizer.tokenize("a red circle")
    assert tokenizer.unk_token not in pieces and len(pieces) >= 3
