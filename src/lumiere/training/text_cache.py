"""Cached text embeddings: every caption of a shard set encoded once by the frozen T5, read back in training.

The frozen text encoder (T5-XXL for DeepFloyd IF, paper Sec. 3) sees the same captions in every
epoch on every rank. ``python -m lumiere.training.text_cache`` encodes each distinct caption once, and
with ``model.text_cache=STORE`` a stage takes the states from the store instead of loading the
encoder at all. Not in the paper: a training-cost measure, off by default (``model.text_cache: null``).

Store layout (a folder; safetensors and json only, nothing pickled)::

    STORE/index.json                 format, the encoder it was made with (its frozen-part
                                     fingerprint, folder, max_length, width, config.json sha256),
                                     the storage dtype, the part files and the shard specs encoded
    STORE/part-000000.safetensors    "states" (N, L, D) bf16|fp16, "mask" (N, L) bool, and the
                                     metadata "keys": the sha256 (hex, of the UTF-8 caption) of each row

States are stored as the encoder returns them, padded to its ``max_length`` L (not trimmed to the
mask): IF's pooled text embedding attends over the padded positions too, so trimming would change
what the U-Net sees. The empty caption (classifier-free guidance, ``caption_dropout``) is always
in the store. Runs are resumable: a new run encodes only the captions the store lacks; each part
is written atomically before ``index.json`` names it, so a killed run leaves a readable store.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shlex
import sys
from collections.abc import Iterable, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lumiere.data.shards import expand_shards, shard_captions
from lumiere.errors import ConfigError, InputFileError, LumiereError
from lumiere.utils import atomic_write

log = logging.getLogger("lumiere")

INDEX_NAME = "index.json"
STORE_FORMAT = "lumiere-text-cache"
STORE_VERSION = 1
STORAGE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # fp16 overflows in T5 v1.1's feed-forward
MISSING_POLICIES = ("error", "encode")  # model.text_cache_missing
VOCABULARY_CHECK_CAPTIONS = 256  # as the stages check the tokenizer on the training captions
EMPTY_CAPTION = ""


def caption_key(caption: str) -> str:
    """The store key of a caption: sha256 of its UTF-8 bytes, hex."""
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()


def text_encoder_fingerprint(encoder: nn.Module) -> str:
    """The frozen-part fingerprint a stage records for this encoder (``frozen_fingerprints()["text_encoder"]``:
    the stage holds it as ``text_encoder``), taken of the weights as loaded."""
    from lumiere.training.base import tensor_fingerprint

    named = dict(encoder.named_parameters(remove_duplicate=False))
    return tensor_fingerprint((f"text_encoder.{name}", named[name]) for name in sorted(named))


def file_sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


# -- reading a store ---------------------------------------------------------------------------


def read_index(root: Path) -> dict[str, Any] | None:
    """``root/index.json`` checked to be a text cache index; None when there is none."""
    path = root / INDEX_NAME
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputFileError(f"cannot read the text cache index {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(index, dict) or index.get("format") != STORE_FORMAT:
        raise InputFileError(f"{path} is not a text cache index (made by python -m lumiere.training.text_cache)")
    if index.get("version") != STORE_VERSION:
        raise InputFileError(f"{path} is a version {index.get('version')} text cache; this code reads version "
                             f"{STORE_VERSION}: re-run python -m lumiere.training.text_cache --overwrite")
    return index


def part_keys(path: Path) -> list[str]:
    """The caption keys of one part file, from its safetensors header only."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return json.loads((handle.metadata() or {})["keys"])
    except (OSError, ValueError, KeyError, SafetensorError) as error:
        raise InputFileError(f"text cache part {path} is unreadable ({type(error).__name__}): re-run "
                             "python -m lumiere.training.text_cache with --overwrite") from None


def rerun_command(index: dict[str, Any], root: Path) -> str:
    """The command that adds missing captions to this store (the shard specs it was made from)."""
    encoder = index["encoder"]
    parts = ["python", "-m", "lumiere.training.text_cache"]
    sources, prompt_files = index.get("sources") or [], index.get("prompt_files") or []
    for spec in sources or ([] if prompt_files else ["SHARDS"]):
        parts += ["--shards", spec]
    for path in prompt_files:
        parts += ["--prompts", path]
    parts += ["--text-encoder", encoder["path"]]
    parts += [item for flag, key in (("--tokenizer", "tokenizer_path"), ("--variant", "variant")) if encoder.get(key)
              for item in (flag, encoder[key])]
    parts += ["--dtype", index["dtype"], "--out", str(root)]
    return shlex.join(parts)


class TextCacheStore:
    """Read access to a store: ``lookup(keys)`` -> rows of states and masks, in the stored dtype."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        index = read_index(self.root) if self.root.is_dir() else None
        if index is None:
            raise InputFileError(f"model.text_cache={root} is not a text cache (no {INDEX_NAME}): make it with "
                                 f"python -m lumiere.training.text_cache --shards SHARDS --text-encoder PATH --out {root}")
        self.index = index
        self.rows: dict[str, tuple[int, int]] = {}  # key -> (part number, row)
        for number, part in enumerate(index["parts"]):
            for row, key in enumerate(part_keys(self.root / part["file"])):
                self.rows.setdefault(key, (number, row))
        if caption_key(EMPTY_CAPTION) not in self.rows:
            raise InputFileError(f"the text cache {self.root} lacks the empty caption (classifier-free guidance): "
                                 f"re-run {rerun_command(index, self.root)}")
        self._handles: dict[int, Any] = {}

    @property
    def encoder(self) -> dict[str, Any]:
        """What the store records of the encoder it was made with (fingerprint, path, max_length, dim, ...)."""
        return self.index["encoder"]

    @property
    def storage_dtype(self) -> torch.dtype:
        return STORAGE_DTYPES[self.index["dtype"]]

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:  # open safetensors handles do not pickle (spawned DDP ranks)
        return {**self.__dict__, "_handles": {}}

    def _handle(self, number: int):
        from safetensors import safe_open

        if number not in self._handles:
            self._handles[number] = safe_open(str(self.root / self.index["parts"][number]["file"]), framework="pt")
        return self._handles[number]

    def lookup(self, keys: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """States (B, L, D) in the stored dtype and masks (B, L) bool of ``keys``, all present in the store."""
        states, masks = [], []
        for key in keys:
            number, row = self.rows[key]
            handle = self._handle(number)
            states.append(handle.get_slice("states")[row : row + 1])
            masks.append(handle.get_slice("mask")[row : row + 1])
        return torch.cat(states), torch.cat(masks)


# -- the stand-in for the frozen text encoder --------------------------------------------------


class CachedTextEncoder(nn.Module):
    """Prompts -> (hidden (B, L, D) float32, mask (B, L) bool) read from a text cache, like FrozenTextEncoder.

    Holds no weights. ``missing="error"``: a prompt not in the store raises one line naming its hash
    and the command that adds it; ``"encode"``: the text encoder is loaded on the first such prompt
    (its fingerprint checked against the store's) and encodes the missing prompts, rounded to the
    stored dtype so that they equal what the store would hold."""

    is_text_cache = True

    def __init__(self, store: TextCacheStore, *, missing: str = "error", encoder_dir: str | Path | None = None,
                 tokenizer_path: str | Path | None = None, variant: str | None = None):
        super().__init__()
        if missing not in MISSING_POLICIES:
            raise ConfigError(f"model.text_cache_missing={missing!r}: use one of {', '.join(MISSING_POLICIES)}")
        if missing == "encode" and encoder_dir is None:
            raise ConfigError("model.text_cache_missing=encode needs the text encoder's folder to fall back on")
        self.store = store
        self.missing = missing
        self.encoder_dir, self.tokenizer_path, self.variant = encoder_dir, tokenizer_path, variant
        self._fallback: list[nn.Module] = []  # a list, so the fallback encoder is no submodule (no state, no fingerprint)
        self._warned_fallback = False
        self.register_buffer("device_anchor", torch.empty(0), persistent=False)  # follows .to(device)

    @property
    def encoder_fingerprint(self) -> str:
        """The frozen-part fingerprint of the encoder the store was made with (DiffusionModule.frozen_fingerprints)."""
        return str(self.store.encoder["fingerprint"])

    def missing_prompts(self, prompts: Iterable[str]) -> list[str]:
        return [prompt for prompt in dict.fromkeys(prompts) if caption_key(prompt) not in self.store]

    def require(self, prompts: Iterable[str], source: str) -> None:
        """Raise one line unless every prompt of ``source`` is in the store (or missing ones are encoded)."""
        absent = self.missing_prompts(prompts)
        if absent and self.missing == "error":
            self._raise_missing(absent[0], f" ({len(absent)} of {source} missing)")

    def _raise_missing(self, prompt: str, detail: str = "") -> None:
        preview = prompt if len(prompt) <= 60 else prompt[:57] + "..."  # repr below: one line whatever it holds
        raise InputFileError(
            f"caption {caption_key(prompt)} ({preview!r}) is not in the text cache {self.store.root}{detail}: add it with "
            f"`{rerun_command(self.store.index, self.store.root)}` (it encodes only what is missing; --prompts FILE "
            "adds prompts that are in no shard), or set model.text_cache_missing=encode")

    def _fallback_encoder(self) -> nn.Module:
        if not self._fallback:
            from lumiere.models.text import FrozenTextEncoder

            encoder = FrozenTextEncoder.from_pretrained(self.encoder_dir, tokenizer_path=self.tokenizer_path,
                                                        variant=self.variant)
            fingerprint = text_encoder_fingerprint(encoder)
            if fingerprint != self.encoder_fingerprint:
                raise InputFileError(
                    f"the text cache {self.store.root} was made with another text encoder (fingerprint "
                    f"{self.encoder_fingerprint}) than the one at {self.encoder_dir} ({fingerprint}): re-make it with "
                    f"--overwrite, or point model.text_cache at the cache of this encoder")
            self._fallback.append(encoder.to(self.device_anchor.device))
        return self._fallback[0]

    def forward(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("CachedTextEncoder expects a list of prompt strings")
        prompts = list(prompts)
        absent = self.missing_prompts(prompts)
        if absent and self.missing == "error":
            self._raise_missing(absent[0])
        present = [p for p in prompts if caption_key(p) in self.store]
        found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if present:
            states, masks = self.store.lookup([caption_key(p) for p in present])
            found.update({p: (s, m) for p, s, m in zip(present, states, masks)})
        if absent:
            encoder = self._fallback_encoder()
            if not self._warned_fallback:
                log.warning("%d caption(s) not in the text cache %s were encoded by the text encoder "
                            "(model.text_cache_missing=encode); more may follow, without another warning",
                            len(absent), self.store.root)
                self._warned_fallback = True
            with torch.no_grad():
                hidden, mask = encoder(absent)
            hidden = hidden.to("cpu", self.store.storage_dtype)  # what the store would hold
            found.update({p: (h, m.cpu()) for p, h, m in zip(absent, hidden, mask)})
        device = self.device_anchor.device
        hidden = torch.stack([found[p][0] for p in prompts]).to(device=device, dtype=torch.float32)
        mask = torch.stack([found[p][1] for p in prompts]).to(device)
        return hidden, mask


def frozen_text_encoder(encoder_dir: str | Path, *, tokenizer_path: str | Path | None = None,
                        variant: str | None = None, text_cache: str | None = None,
                        missing: str = "error") -> nn.Module:
    """What a stage holds as its frozen ``text_encoder``: the encoder at ``encoder_dir``, or, with
    ``text_cache``, the cache standing in for it (the encoder is then not loaded)."""
    if text_cache is None:
        from lumiere.models.text import FrozenTextEncoder

        return FrozenTextEncoder.from_pretrained(encoder_dir, tokenizer_path=tokenizer_path, variant=variant)
    store = TextCacheStore(text_cache)
    made_with = store.encoder.get("config_sha256")
    config_here = file_sha256(Path(encoder_dir) / "config.json")
    if made_with and config_here and made_with != config_here:
        raise InputFileError(f"the text cache {store.root} was made with the text encoder at {store.encoder['path']}, "
                             f"whose config.json differs from {Path(encoder_dir) / 'config.json'}: re-make the cache "
                             "for this encoder, or point model.text_cache at the right one")
    return CachedTextEncoder(store, missing=missing, encoder_dir=encoder_dir, tokenizer_path=tokenizer_path,
                             variant=variant)


def check_text_cache_in_use(module: nn.Module) -> None:
    """Before fit (DiffusionModule.setup): a stage given ``text_cache`` must read it, and the empty caption,
    the validation prompts and the first training captions must be in it: a cache of other data fails
    here, not at the first validation hours later."""
    text_encoder = getattr(module, "text_encoder", None)
    if not getattr(text_encoder, "is_text_cache", False):
        raise ConfigError(f"model.text_cache is set but {type(module).__name__} encodes its captions with its own "
                          "text encoder (only the frozen-encoder stages read a text cache): set model.text_cache=null")
    text_encoder.require([EMPTY_CAPTION, *getattr(module, "val_prompts", [])], "the validation prompts")
    try:
        datamodule = getattr(module.trainer, "datamodule", None)
    except RuntimeError:  # not attached to a trainer
        datamodule = None
    if hasattr(datamodule, "train_captions"):
        text_encoder.require(datamodule.train_captions(limit=VOCABULARY_CHECK_CAPTIONS),
                             f"the first {VOCABULARY_CHECK_CAPTIONS} training captions")


# -- writing a store ---------------------------------------------------------------------------




def encoder_record(encoder, encoder_dir: Path, tokenizer_path: str | None, variant: str | None) -> dict[str, Any]:
    config_dir = encoder_dir if (encoder_dir / "config.json").is_file() else encoder_dir / "text_encoder"
    return {"fingerprint": text_encoder_fingerprint(encoder), "path": str(encoder_dir.resolve()),
            "tokenizer_path": str(Path(tokenizer_path).resolve()) if tokenizer_path else None, "variant": variant,
            "max_length": int(encoder.max_length), "dim": int(encoder.dim),
            "tokenizer": type(encoder.tokenizer).__name__, "config_sha256": file_sha256(config_dir / "config.json")}


def open_for_writing(root: Path, record: dict[str, Any], dtype: str, overwrite: bool) -> dict[str, Any]:
    """The index to extend: the existing one when it was made by this encoder in this dtype, else a new one
    (an existing store of another encoder or dtype is refused unless ``overwrite``; then its parts are removed)."""
    fresh = {"format": STORE_FORMAT, "version": STORE_VERSION, "encoder": record, "dtype": dtype,
             "layout": "padded to max_length", "parts": [], "sources": [], "prompt_files": [], "num_captions": 0}
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--out {root} exists and is not a folder")
    index = read_index(root) if root.is_dir() else None
    if index is None:
        return fresh
    made_with, stored_dtype = index["encoder"], index.get("dtype")
    same = (made_with.get("fingerprint"), made_with.get("max_length"), stored_dtype) == \
        (record["fingerprint"], record["max_length"], dtype)
    if same:
        return index
    if not overwrite:
        raise ConfigError(
            f"{root} holds a text cache of another encoder or dtype (fingerprint {made_with.get('fingerprint')}, "
            f"max_length {made_with.get('max_length')}, {stored_dtype}; now {record['fingerprint']}, "
            f"{record['max_length']}, {dtype}): pass --overwrite to replace it, or another --out")
    for part in index["parts"]:
        (root / part["file"]).unlink(missing_ok=True)
    (root / INDEX_NAME).unlink()
    return fresh


def write_part(root: Path, index: dict[str, Any], keys: list[str], states: torch.Tensor, masks: torch.Tensor) -> None:
    """One part file (atomically), then the index naming it (atomically): a kill leaves the store readable."""
    from safetensors.torch import save

    name = f"part-{len(index['parts']):06d}.safetensors"
    payload = save({"states": states.contiguous(), "mask": masks.contiguous()}, metadata={"keys": json.dumps(keys)})
    atomic_write(root / name, lambda stream: stream.write(payload))
    index["parts"].append({"file": name, "count": len(keys)})
    index["num_captions"] = int(index["num_captions"]) + len(keys)
    write_index(root, index)


def write_index(root: Path, index: dict[str, Any]) -> None:
    text = json.dumps(index, indent=2, sort_keys=True).encode()
    atomic_write(root / INDEX_NAME, lambda stream: stream.write(text))


def build_text_cache(
    captions: Iterable[str],
    encoder,  # a FrozenTextEncoder, loaded as the stages load it (its fingerprint is taken as loaded)
    out: str | Path,
    *,
    encoder_dir: str | Path,
    tokenizer_path: str | None = None,
    variant: str | None = None,
    dtype: str = "bf16",
    compute_dtype: str = "fp32",
    sources: Sequence[str] = (),  # the shard specs the captions come from (for the re-run command)
    prompt_files: Sequence[str] = (),  # and the prompt files
    batch_size: int = 32,
    part_size: int = 1024,
    overwrite: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, int]:
    """Encode the captions (and the empty caption) the store at ``out`` lacks; returns counts
    ``{"captions": distinct captions seen, "encoded": newly encoded, "stored": in the store now}``."""
    if dtype not in STORAGE_DTYPES:
        raise ConfigError(f"--dtype {dtype}: use one of {', '.join(STORAGE_DTYPES)}")
    if compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"--compute-dtype {compute_dtype}: use one of {', '.join(COMPUTE_DTYPES)}")
    if batch_size < 1 or part_size < 1:
        raise ConfigError(f"--batch-size and --part-size must be >= 1, got {batch_size}, {part_size}")
    root = Path(out).expanduser()
    record = encoder_record(encoder, Path(encoder_dir).expanduser(), tokenizer_path, variant)
    index = open_for_writing(root, record, dtype, overwrite)
    index["sources"] = list(dict.fromkeys([*index.get("sources", []), *sources]))
    index["prompt_files"] = list(dict.fromkeys([*index.get("prompt_files", []),
                                                *(str(Path(p).resolve()) for p in prompt_files)]))
    stored = {key for part in index["parts"] for key in part_keys(root / part["file"])}

    distinct = list(dict.fromkeys([EMPTY_CAPTION, *captions]))
    if hasattr(encoder, "check_vocabulary"):
        encoder.check_vocabulary([c for c in distinct if c][:VOCABULARY_CHECK_CAPTIONS], "the captions to cache")
    todo = [caption for caption in distinct if caption_key(caption) not in stored]
    encoder = encoder.to(device=device, dtype=COMPUTE_DTYPES[compute_dtype]).eval()
    storage = STORAGE_DTYPES[dtype]
    pending: list[tuple[list[str], torch.Tensor, torch.Tensor]] = []  # encoded batches not yet in a part

    def flush() -> None:
        if pending:
            keys = [key for batch_keys, _, _ in pending for key in batch_keys]
            write_part(root, index, keys, torch.cat([s for _, s, _ in pending]), torch.cat([m for _, _, m in pending]))
            pending.clear()

    batches, done = iter(todo), 0
    with torch.no_grad():
        while batch := list(islice(batches, batch_size)):
            hidden, mask = encoder(batch)
            pending.append(([caption_key(c) for c in batch], hidden.to("cpu", storage), mask.cpu()))
            done += len(batch)
            if sum(len(keys) for keys, _, _ in pending) >= part_size:
                flush()
            if progress:
                print(f"\rencoded {done}/{len(todo)} captions", end="", file=sys.stderr, flush=True)
    flush()
    if progress and todo:
        print(file=sys.stderr)
    write_index(root, index)  # the sources of this run, even when nothing was missing
    return {"captions": len(distinct), "encoded": len(todo), "stored": len(stored) + len(todo)}


# -- command line ------------------------------------------------------------------------------


def absolute_spec(spec: str) -> str:
    """A shard spec with its local parts made absolute, so the recorded re-run command works from any folder."""
    pieces = [piece.strip() for piece in spec.split("::") if piece.strip()]
    return "::".join(piece if "://" in piece or piece.startswith("pipe:") else str(Path(piece).expanduser().absolute())
                     for piece in pieces)


def read_prompt_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise InputFileError(f"cannot read --prompts {path}: {error.strerror or error}") from None
    return [line.strip() for line in lines if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lumiere.training.text_cache",
        description="Encode every caption of a shard set once with the frozen text encoder, for model.text_cache=OUT.")
    parser.add_argument("--shards", action="append", default=[],
                        help="shard folder, glob or brace pattern (repeat, or join with ::); give the training and "
                             "validation shards")
    encoder_source = parser.add_mutually_exclusive_group(required=True)
    encoder_source.add_argument("--text-encoder", help="the text encoder's folder (model.text_encoder_path)")
    encoder_source.add_argument("--t2i-path", help="a pipeline folder with text_encoder/ and tokenizer/ (model.t2i_path)")
    parser.add_argument("--tokenizer", help="tokenizer folder (model.tokenizer_path), when not beside the encoder")
    parser.add_argument("--variant", help="weight variant to load, e.g. fp16 (model.variant)")
    parser.add_argument("--out", required=True, help="the store folder (created; resumed when it exists)")
    parser.add_argument("--dtype", default="bf16", choices=sorted(STORAGE_DTYPES), help="storage dtype (default bf16)")
    parser.add_argument("--compute-dtype", default="fp32", choices=sorted(COMPUTE_DTYPES),
                        help="dtype the encoder runs in (default fp32; bf16 halves its memory)")
    parser.add_argument("--prompts", action="append", default=[],
                        help="a text file of prompts, one per line, to cache too (e.g. model.val_prompts)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32, help="captions per encoder call")
    parser.add_argument("--part-size", type=int, default=1024, help="captions per part file")
    parser.add_argument("--overwrite", action="store_true", help="replace a store made by another encoder or dtype")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        from lumiere.models.text import FrozenTextEncoder
        from lumiere.utils import quiet_libraries

        quiet_libraries()
        if not args.shards and not args.prompts:
            raise ConfigError("nothing to encode: give --shards (and/or --prompts)")
        encoder_dir = args.text_encoder or args.t2i_path
        encoder = FrozenTextEncoder.from_pretrained(encoder_dir, tokenizer_path=args.tokenizer, variant=args.variant)
        prompts = [prompt for path in args.prompts for prompt in read_prompt_file(path)]
        captions = chain(prompts, shard_captions(expand_shards(list(args.shards))) if args.shards else ())
        counts = build_text_cache(captions, encoder, args.out, encoder_dir=encoder_dir, tokenizer_path=args.tokenizer,
                                  variant=args.variant, dtype=args.dtype, compute_dtype=args.compute_dtype,
                                  sources=[absolute_spec(spec) for spec in args.shards], prompt_files=args.prompts, batch_size=args.batch_size,
                                  part_size=args.part_size, overwrite=args.overwrite, device=args.device, progress=not args.quiet)
    except LumiereError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{counts['captions']} distinct captions (with the empty one): {counts['encoded']} encoded, "
          f"{counts['stored']} in {args.out}; train with model.text_cache={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
