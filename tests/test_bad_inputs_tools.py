"""Bad inputs to the command-line tools and the weight loaders: one line, never a traceback.

Every row of :data:`CASES` runs a tool as a subprocess on files the row creates and checks the
project's convention: exit code 2, the last stderr line starts with ``error: `` and names the
problem, no ``Traceback`` anywhere on stderr, and no file created or changed in the folder the
inputs live in (Hydra's own run folder is kept elsewhere). To add a case, append a
:class:`Case`; ``{work}`` in an argument is the folder of its files.

The Python-API tests below cover what is too big or too slow for a subprocess row: all-zero C3D
weights of the full shapes, object arrays with a payload that must never run, zero I3D weights,
and decoders that must not print what they cannot decode.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DIR = object()  # in Case.files: create a folder at that path


class _Payload:
    """Unpickling this touches ``marker``: proof of whether a loader ran pickled code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _c3d_npz_with(key: str, array: np.ndarray) -> bytes:
    return _npz(**{key: array})


MEAN_CLIP = _npz(mean=np.full((3, 16, 120, 120), 100.0, dtype=np.float32))
MALICIOUS_NPZ = _npz(**{"conv1a/W": np.array([_Payload("/nonexistent/lumiere-pwned")], dtype=object)})
NOT_UTF8_CSV = b"video,caption\na.mp4,caf\xe9 au lait\n"  # latin-1 "café": 0xe9 at byte 23, line 2


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # after the interpreter; "{work}" is the folder holding the files below
    files: dict[str, object] = field(default_factory=dict)  # relative path -> bytes, str ("{work}" filled in) or DIR
    expected: str = ""  # fragment of the last stderr line (after "error: ")


def _i3d(*args: str) -> tuple[str, ...]:
    return ("-m", "lumiere.metrics.i3d_weights", *args)


def _convert(*args: str) -> tuple[str, ...]:
    return ("-m", "lumiere.data.convert", "--quiet", *args)


def _evaluate_ucf101(*overrides: str) -> tuple[str, ...]:
    """evaluate.py evaluation=ucf101 with the run, artifacts and logs outside the inputs folder."""
    return (str(REPO_ROOT / "evaluate.py"), "evaluation=ucf101", "ckpt_path={work}/base.ckpt",
            "hydra.run.dir={work}/../hydra_run", "paths.artifacts_dir={work}/../artifacts",
            "evaluation.generated_dir={work}/../generated", "progress=false", *overrides)


VIDEOS = {"vids": DIR, "vids/a.mp4": b"not really a video"}
GOOD_CSV = {"captions.csv": "video,caption\na.mp4,a dog runs\n"}

CASES = [
    # --- I3D weights converter (python -m lumiere.metrics.i3d_weights) -------------------------
    Case("i3d-checkpoint-missing", _i3d("--checkpoint", "{work}/nope.ckpt", "--out", "{work}/i3d.safetensors"),
         {}, "I3D checkpoint not found: "),
    Case("i3d-checkpoint-is-a-folder", _i3d("--checkpoint", "{work}/ckpt", "--out", "{work}/i3d.safetensors"),
         {"ckpt": DIR}, "is a directory"),
    Case("i3d-checkpoint-runs-code", _i3d("--checkpoint", "{work}/i3d.ckpt", "--out", "{work}/i3d.safetensors"),
         {"i3d.ckpt": pickle.dumps({"params": _Payload("/nonexistent/lumiere-pwned"), "batch_stats": {}})}, "refusing to load"),
    Case("i3d-out-is-a-folder", _i3d("--checkpoint", "{work}/i3d.ckpt", "--out", "{work}/out"),
         {"out": DIR, "i3d.ckpt": pickle.dumps([1])}, "is a directory"),
    Case("i3d-weights-text-named-safetensors", _i3d("--out", "{work}/i3d.safetensors", "--verify"),
         {"i3d.safetensors": "hello\n"}, "is not a safetensors file"),
    # --- video converter (python -m lumiere.data.convert) ---------------------------------------
    Case("convert-videos-folder-missing", _convert("--videos", "{work}/nope", "--captions", "{work}/captions.csv",
                                                   "--out", "{work}/out"), GOOD_CSV, "videos folder not found"),
    Case("convert-caption-file-missing", _convert("--videos", "{work}/vids", "--captions", "{work}/nope.csv",
                                                  "--out", "{work}/out"), VIDEOS, "caption file not found"),
    Case("convert-videos-without-captions", _convert("--videos", "{work}/vids", "--out", "{work}/out"),
         VIDEOS, "--videos needs --captions"),
    Case("convert-csv-without-known-columns", _convert("--videos", "{work}/vids", "--captions", "{work}/c.csv",
                                                       "--out", "{work}/out"),
         {**VIDEOS, "c.csv": "foo\na.mp4,extra field\n"}, "needs a video column"),
    Case("convert-csv-not-utf8", _convert("--videos", "{work}/vids", "--captions", "{work}/c.csv", "--out", "{work}/out"),
         {**VIDEOS, "c.csv": NOT_UTF8_CSV}, "c.csv is not UTF-8: byte 0xe9 at byte offset 23 (line 2)"),
    Case("convert-json-invalid", _convert("--videos", "{work}/vids", "--captions", "{work}/c.json", "--out", "{work}/out"),
         {**VIDEOS, "c.json": "{not json"}, "is not valid json"),
    Case("convert-out-is-a-file", _convert("--videos", "{work}/vids", "--captions", "{work}/captions.csv",
                                           "--out", "{work}/out"),
         {**VIDEOS, **GOOD_CSV, "out": "a file"}, "exists and is not a directory"),
    Case("convert-out-below-a-file", _convert("--videos", "{work}/vids", "--captions", "{work}/captions.csv",
                                              "--out", "{work}/out/shards"),
         {**VIDEOS, **GOOD_CSV, "out": "a file"}, "cannot be created"),
    Case("convert-ucf101-folder-missing", _convert("--ucf101", "{work}/UCF-101", "--out", "{work}/out"),
         {}, "UCF101 folder not found"),
    Case("convert-ucf101-split-not-utf8", _convert("--ucf101", "{work}/UCF-101", "--split-file", "{work}/split.txt",
                                                   "--out", "{work}/out"),
         {"UCF-101/Archery/v_Archery_g01_c01.avi": b"x", "split.txt": b"Archery/v_Archery_g01_c01.avi 1\n\xff\n"},
         "split.txt is not UTF-8: byte 0xff at byte offset 32 (line 2)"),
    # --- the C3D / I3D loaders through evaluate.py (evaluation=ucf101 checks them before generating)
    Case("evaluate-c3d-npz-with-pickled-object", _evaluate_ucf101("evaluation.c3d_weights={work}/w.npz",
                                                                  "evaluation.c3d_mean={work}/mean2.npz"),
         {"w.npz": MALICIOUS_NPZ, "mean2.npz": MEAN_CLIP}, "array 'conv1a/W' holds pickled Python objects"),
    Case("evaluate-i3d-weights-not-safetensors", _evaluate_ucf101("evaluation.is_splits=0",
                                                                  "evaluation.i3d_weights={work}/i3d.safetensors"),
         {"i3d.safetensors": pickle.dumps({"a": 1})}, "is not a safetensors file"),
]


# The same rows for the I3D converter run in-process through ``main(argv)``: its subprocess
# start-up (torch, torchmetrics) costs seconds on a busy CPU, and the subprocess rows above
# already prove the exit code and the stderr of the real command line.
IN_PROCESS_I3D_CASES = [
    Case("i3d-checkpoint-is-text", ("--checkpoint", "{work}/i3d.ckpt", "--out", "{work}/i3d.safetensors"),
         {"i3d.ckpt": "these are not weights\n"}, "is not a numpy-only weights pickle"),
    Case("i3d-checkpoint-not-a-flax-tree", ("--checkpoint", "{work}/i3d.ckpt", "--out", "{work}/i3d.safetensors"),
         {"i3d.ckpt": pickle.dumps([1, 2, 3])}, "does not hold a Flax tree"),
    Case("i3d-checkpoint-missing-with-existing-out",
         ("--checkpoint", "{work}/nope.ckpt", "--out", "{work}/i3d.safetensors"),
         {"i3d.safetensors": b"anything"}, "I3D checkpoint not found: "),
    Case("i3d-weights-pickle-named-safetensors", ("--out", "{work}/i3d.safetensors", "--verify"),
         {"i3d.safetensors": pickle.dumps({"Conv3d_1a_7x7.conv3d.weight": np.zeros(3)})}, "is not a safetensors file"),
]


def _create(root: Path, files: dict[str, object]) -> None:
    for relative, content in files.items():
        path = root / relative
        if content is DIR:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):  # text may name the folder; bytes are written as they are
            content = content.replace("{work}", str(root)).encode()
        path.write_bytes(content)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_the_table_covers_every_tool():
    assert len(CASES) >= 12 and len({case.id for case in CASES}) == len(CASES)
    tools = {case.argv[1] if case.argv[0] == "-m" else Path(case.argv[0]).name for case in CASES}
    assert tools == {"lumiere.metrics.i3d_weights", "lumiere.data.convert", "evaluate.py"}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_is_one_error_line_and_writes_nothing(case, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    _create(work, case.files)
    before = _snapshot(work)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROJECT_ROOT": str(tmp_path),
           "LUMIERE_CACHE": str(tmp_path / "cache")}  # never the user's cache, never a download
    argv = [arg.replace("{work}", str(work)) for arg in case.argv]
    done = subprocess.run([sys.executable, *argv], cwd=work, env=env, capture_output=True, text=True, timeout=180)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), done.stderr[-3000:]
    assert case.expected in lines[-1], lines[-1]
    assert _snapshot(work) == before, "the tool created or changed files next to its inputs"
    assert not (tmp_path / "cache").exists() and not (tmp_path / "generated").exists()


@pytest.mark.parametrize("case", IN_PROCESS_I3D_CASES, ids=lambda case: case.id)
def test_i3d_converter_in_process_is_one_error_line(case, tmp_path, capsys, monkeypatch):
    from lumiere.metrics import i3d_weights

    monkeypatch.setenv("LUMIERE_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    _create(work, case.files)
    before = _snapshot(work)
    capsys.readouterr()
    assert i3d_weights.main([arg.replace("{work}", str(work)) for arg in case.argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and case.expected in lines[-1], lines
    assert _snapshot(work) == before and not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------------------------
# Python API: the C3D loader
# ----------------------------------------------------------------------------------------------


def _broadcast_c3d(value_for) -> dict[str, np.ndarray]:
    """Full-size C3D arrays without the memory: read-only broadcasts of one value or one row."""
    from lumiere.metrics.c3d import c3d_npz_shapes

    return {key: np.broadcast_to(value_for(key, shape), shape) for key, shape in c3d_npz_shapes().items()}


def _varying(key, shape):
    return np.linspace(-0.01, 0.01, shape[-1], dtype=np.float32)


def test_all_zero_c3d_weights_are_refused_naming_the_array(tmp_path):
    from lumiere.errors import InputFileError
    from lumiere.metrics.c3d import C3D, c3d_npz_shapes, check_c3d_arrays

    expected = c3d_npz_shapes()
    with pytest.raises(InputFileError, match=r"array 'conv1a/W' is constant \(0 everywhere\)"):
        check_c3d_arrays(_broadcast_c3d(lambda key, shape: np.float32(0)), expected, "zeros.npz")
    one_dead_layer = _broadcast_c3d(lambda key, shape: np.float32(0) if key == "fc7/W" else _varying(key, shape))
    with pytest.raises(InputFileError, match="array 'fc7/W' is constant"):
        check_c3d_arrays(one_dead_layer, expected, "w.npz")
    check_c3d_arrays(_broadcast_c3d(_varying), expected, "w.npz")  # the right shapes, not constant: accepted

    # through the loader, on files
    (tmp_path / "mean2.npz").write_bytes(MEAN_CLIP)
    weights = tmp_path / "conv3d_deepnetA_ucf.npz"
    weights.write_bytes(_c3d_npz_with("conv1a/W", np.zeros((64, 3, 3, 3, 3), np.float32)))
    with pytest.raises(InputFileError, match="conv1a/W' is constant") as error:
        C3D.from_tgan2_npz(weights, tmp_path / "mean2.npz")
    assert "\n" not in str(error.value)
    weights.write_bytes(_c3d_npz_with("fc8/W", np.ones((10, 4096), np.float32)))
    with pytest.raises(InputFileError, match=r"array 'fc8/W' has shape \(10, 4096\), the C3D needs \(101, 4096\)"):
        C3D.from_tgan2_npz(weights, tmp_path / "mean2.npz")
    nan = np.linspace(0, 1, 64 * 81, dtype=np.float32).reshape(64, 3, 3, 3, 3)
    nan[0, 0, 0, 0, 0] = np.nan
    weights.write_bytes(_c3d_npz_with("conv1a/W", nan))
    with pytest.raises(InputFileError, match="'conv1a/W' holds NaN"):
        C3D.from_tgan2_npz(weights, tmp_path / "mean2.npz")


def test_npz_with_pickled_objects_is_refused_and_the_payload_never_runs(tmp_path):
    from lumiere.errors import InputFileError
    from lumiere.metrics import VideoInceptionScore
    from lumiere.metrics.c3d import C3D, load_mean_clip

    marker = tmp_path / "payload-ran"
    malicious = _npz(**{"conv1a/W": np.array([_Payload(str(marker))], dtype=object)})
    weights, mean = tmp_path / "conv3d_deepnetA_ucf.npz", tmp_path / "mean2.npz"
    weights.write_bytes(malicious)
    mean.write_bytes(MEAN_CLIP)
    with pytest.raises(InputFileError, match="array 'conv1a/W' holds pickled Python objects; refused") as error:
        C3D.from_tgan2_npz(weights, mean)
    assert "\n" not in str(error.value) and error.value.__cause__ is None
    with pytest.raises(InputFileError, match="pickled Python objects"):
        VideoInceptionScore(c3d_weights=weights, c3d_mean=mean)

    mean.write_bytes(_npz(mean=np.array([_Payload(str(marker))], dtype=object)))
    with pytest.raises(InputFileError, match="C3D mean .*array 'mean' holds pickled Python objects"):
        load_mean_clip(mean)

    weights.write_bytes(pickle.dumps(_Payload(str(marker))))  # a bare pickle named .npz
    with pytest.raises(InputFileError, match="is not an npz archive of plain arrays"):
        C3D.from_tgan2_npz(weights, tmp_path / "mean2.npz")
    assert not marker.exists(), "a loader unpickled the payload"


def test_fvd_statistics_that_are_not_an_npz_are_one_line(tmp_path):
    from lumiere.errors import InputFileError
    from lumiere.metrics.fvd import read_fvd_statistics

    path = tmp_path / "ucf101_i3d.npz"
    path.write_bytes(pickle.dumps({"mu": 1}))
    with pytest.raises(InputFileError, match="FVD statistics .* is not an npz archive"):
        read_fvd_statistics(path)
    path.write_bytes(_npz(mu=np.zeros(4), sigma=np.zeros((3, 3)), n=np.int64(2), variant=np.array("v")))
    with pytest.raises(InputFileError, match="not a finite d-dim Gaussian"):
        read_fvd_statistics(path)


# ----------------------------------------------------------------------------------------------
# Python API: the I3D loader
# ----------------------------------------------------------------------------------------------


def test_i3d_weights_that_cannot_be_the_network_are_refused_naming_the_tensor(tmp_path):
    import torch
    from safetensors.torch import save_file

    from lumiere.errors import InputFileError
    from lumiere.metrics.i3d import I3D

    with pytest.raises(InputFileError, match="is a directory"):
        I3D.from_pretrained(tmp_path)
    with pytest.raises(InputFileError, match="I3D weights not found"):
        I3D.from_pretrained(tmp_path / "nope.safetensors")
    path = tmp_path / "i3d.safetensors"
    path.write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(InputFileError, match="is not a safetensors file of I3D weights"):
        I3D.from_pretrained(path)

    state = I3D().state_dict()  # randomly initialised: the right names and shapes
    zeros = {name: torch.zeros_like(tensor) for name, tensor in state.items()}
    save_file(zeros, str(path))
    with pytest.raises(InputFileError, match=r"Conv3d_1a_7x7.conv3d.weight is constant \(0 everywhere\)"):
        I3D.from_pretrained(path)
    save_file({**state, "logits.conv3d.bias": torch.zeros(7)}, str(path))
    with pytest.raises(InputFileError, match=r"logits.conv3d.bias has shape \(7,\), the I3D needs \(400,\)"):
        I3D.from_pretrained(path)


# ----------------------------------------------------------------------------------------------
# Decoders: what cannot be decoded is an error with a reason, never printed
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_undecodable_bytes_print_nothing(backend, capfd):
    if backend == "decord":
        pytest.importorskip("decord")
    from lumiere.data.codec import encode_h264
    from lumiere.data.decoders import VideoDecodeError, decode_clip

    text = b"".join(b"line %d of a text file stored as a video\n" % i for i in range(700))
    clip = encode_h264(np.zeros((8, 32, 32, 3), np.uint8), 8.0)
    capfd.readouterr()
    for data, reason in ((text, "not_video"), (clip[: len(clip) // 2], "truncated")):
        with pytest.raises(VideoDecodeError) as error:
            decode_clip(data, num_frames=4, backend=backend, offset="start")
        assert error.value.reason == reason
    out, err = capfd.readouterr()
    assert out == "" and err == "", f"the decoder printed {len(err.splitlines())} lines: {err[:300]!r}"
    frames, _ = decode_clip(clip, num_frames=4, backend=backend, offset="start")  # fd 2 is back and decoding works
    assert frames.shape == (4, 32, 32, 3)
    print("stderr still works", file=sys.stderr)
    assert "stderr still works" in capfd.readouterr().err


def test_ucf101_root_that_is_missing_or_a_file_is_one_line(tmp_path):
    from lumiere.errors import InputFileError
    from lumiere.evaluation.ucf101_protocol import find_ucf101_videos

    with pytest.raises(InputFileError, match="UCF101 folder not found"):
        find_ucf101_videos(tmp_path / "UCF-101")
    (tmp_path / "UCF-101").write_text("not a folder")
    with pytest.raises(InputFileError, match="is a file, not the UCF-101 folder"):
        find_ucf101_videos(tmp_path / "UCF-101")
