"""Verify the user-supplied C3D files of the video IS (TGANv2's ``conv3d_deepnetA_ucf.npz`` and ``mean2.npz``).

    python -m lumiere.metrics.c3d_weights verify --weights conv3d_deepnetA_ucf.npz --mean mean2.npz

The files are not on any package registry (see ``lumiere.metrics.c3d.WHERE_TO_GET``), so nothing
downloads them and their digests cannot be fetched offline. The check has two parts:

1. the files must load as the TGANv2 C3D (every layer present with its shape, finite, not
   constant; a (3, 16, >=120, >=120) mean clip), as ``C3D.from_tgan2_npz`` requires;
2. their sha256 must equal a reference: the one given on the command line
   (``--weights-sha256`` / ``--mean-sha256``), else the one pinned in ``PINNED_SHA256`` below,
   else the one recorded on this machine the first time the files were verified
   (``<cache>/c3d/sha256.json``, ``$LUMIERE_CACHE`` or ``~/.cache/lumiere``). A first
   verification with no reference records the digests and says that they were compared with
   nothing: a later change of the files (a truncated copy, another release) is then refused.

``PINNED_SHA256`` is empty because this project has never held the released files: someone who
has them fills in the two digests that this command prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from lumiere.errors import InputFileError, LumiereError
from lumiere.metrics.c3d import WHERE_TO_GET
from lumiere.metrics.i3d_weights import cache_dir, sha256_file
from lumiere.utils import atomic_write

WEIGHTS_NAME = "conv3d_deepnetA_ucf.npz"
MEAN_NAME = "mean2.npz"
# sha256 of the released files, by file role; None until someone with the files records them here.
PINNED_SHA256: dict[str, str | None] = {"weights": None, "mean": None}
FILE_NAMES = {"weights": WEIGHTS_NAME, "mean": MEAN_NAME}


def record_path() -> Path:
    """Where the digests of the first verified use are kept."""
    return cache_dir() / "c3d" / "sha256.json"


def _read_record(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputFileError(f"cannot read the C3D checksum record {path} ({error}); delete it to record anew") from None
    if not isinstance(record, dict):
        raise InputFileError(f"the C3D checksum record {path} is not a json object; delete it to record anew")
    return record


def _normalise(digest: str | None, role: str) -> str | None:
    if digest is None:
        return None
    digest = digest.strip().lower()
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise InputFileError(f"--{role}-sha256 must be 64 hexadecimal digits, got {digest!r}")
    return digest


def verify_c3d_files(weights: str | os.PathLike, mean: str | os.PathLike, weights_sha256: str | None = None,
                     mean_sha256: str | None = None, record: bool = True, load: bool = True) -> list[str]:
    """Check the two C3D files (loadable as the TGANv2 C3D, sha256 equal to a reference).

    Returns one line per file saying what its digest was compared with. A mismatch, a missing
    file or files that are not the C3D raise a one-line :class:`InputFileError`. With no
    reference at all and ``record`` the digests are recorded for the next verification.
    """
    paths = {"weights": Path(weights).expanduser(), "mean": Path(mean).expanduser()}
    if load:
        from lumiere.metrics.c3d import C3D

        C3D.from_tgan2_npz(paths["weights"], paths["mean"])  # the structural check, one line when it fails
    for role, path in paths.items():
        if not path.is_file():
            raise InputFileError(f"C3D {role} file not found at {path}: {WHERE_TO_GET}")
    given = {"weights": _normalise(weights_sha256, "weights"), "mean": _normalise(mean_sha256, "mean")}
    store = record_path()
    recorded = _read_record(store)
    lines, to_record = [], {}
    for role, path in paths.items():
        digest = sha256_file(path)
        if given[role]:
            reference, source = given[role], "the sha256 given on the command line"
        elif PINNED_SHA256.get(role):
            reference, source = PINNED_SHA256[role], "the sha256 pinned in lumiere.metrics.c3d_weights"
        elif isinstance(recorded.get(role), dict) and recorded[role].get("sha256"):
            entry = recorded[role]
            reference = entry["sha256"]
            source = f"the sha256 recorded at first use ({entry.get('file', '?')}, {entry.get('recorded', '?')}; {store})"
        else:
            reference, source = None, None
        if reference is None:
            to_record[role] = {"sha256": digest, "file": str(path.resolve()),
                               "recorded": time.strftime("%Y-%m-%d %H:%M:%S")}
            lines.append(f"{FILE_NAMES[role]}: sha256 {digest} (no reference to compare with"
                         + (f"; recorded in {store} for later checks)" if record else ")"))
            continue
        if digest != reference:
            raise InputFileError(f"{path}: sha256 {digest} differs from {source} ({reference}); "
                                 f"the file is not the one expected: {WHERE_TO_GET}")
        lines.append(f"{FILE_NAMES[role]}: sha256 {digest} matches {source}")
    if to_record and record:
        data = (json.dumps({**recorded, **to_record}, indent=2) + "\n").encode()
        atomic_write(store, lambda stream: stream.write(data))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lumiere.metrics.c3d_weights",
                                     description="Verify the TGANv2 C3D files of the video IS by sha256.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check the files load as the C3D and match a sha256 reference")
    verify.add_argument("--weights", type=Path, required=True, help=WEIGHTS_NAME)
    verify.add_argument("--mean", type=Path, required=True, help=MEAN_NAME)
    verify.add_argument("--weights-sha256", default=None, help="expected sha256 of the weights file")
    verify.add_argument("--mean-sha256", default=None, help="expected sha256 of the mean file")
    verify.add_argument("--no-record", action="store_true", help="do not record the digests when there is no reference")
    args = parser.parse_args(argv)
    try:
        for line in verify_c3d_files(args.weights, args.mean, args.weights_sha256, args.mean_sha256,
                                     record=not args.no_record):
            print(line)
    except LumiereError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"C3D files ok. They come from: {WHERE_TO_GET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
