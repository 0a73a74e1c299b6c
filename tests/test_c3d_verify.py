"""python -m lumiere.metrics.c3d_weights verify: the C3D files of the IS checked by sha256 against a given,
pinned or first-use reference (tiny fake files; the structural check is the real loader's)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import lumiere.metrics.c3d_weights as c3d_weights
from lumiere.errors import InputFileError
from lumiere.metrics.c3d import C3D, WHERE_TO_GET
from lumiere.metrics.c3d_weights import main, record_path, verify_c3d_files


@pytest.fixture
def fake_files(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMIERE_CACHE", str(tmp_path / "cache"))
    weights, mean = tmp_path / "conv3d_deepnetA_ucf.npz", tmp_path / "mean2.npz"
    np.savez(weights, **{"conv1a/W": np.arange(6, dtype=np.float32)})
    np.savez(mean, mean=np.ones((3, 16, 128, 128), np.float32))
    return weights, mean


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_first_use_records_and_later_checks_compare(fake_files):
    weights, mean = fake_files
    lines = verify_c3d_files(weights, mean, load=False)
    assert all("no reference to compare with; recorded in" in line for line in lines)
    assert json.loads(record_path().read_text())["weights"]["sha256"] == sha(weights)
    assert all("matches the sha256 recorded at first use" in line for line in verify_c3d_files(weights, mean, load=False))
    np.savez(weights, **{"conv1a/W": np.zeros(6, dtype=np.float32)})  # another file under the same name
    with pytest.raises(InputFileError, match=r"sha256 [0-9a-f]{64} differs from the sha256 recorded at first use"):
        verify_c3d_files(weights, mean, load=False)


def test_given_and_pinned_checksums_win_over_the_record(fake_files, monkeypatch):
    weights, mean = fake_files
    lines = verify_c3d_files(weights, mean, weights_sha256=sha(weights).upper(), mean_sha256=sha(mean), load=False)
    assert all("matches the sha256 given on the command line" in line for line in lines)
    assert not record_path().exists()  # nothing to record: both were compared
    with pytest.raises(InputFileError, match="differs from the sha256 given on the command line"):
        verify_c3d_files(weights, mean, weights_sha256="0" * 64, load=False)
    with pytest.raises(InputFileError, match="must be 64 hexadecimal digits"):
        verify_c3d_files(weights, mean, mean_sha256="abc", load=False)
    monkeypatch.setitem(c3d_weights.PINNED_SHA256, "mean", "f" * 64)
    with pytest.raises(InputFileError, match="differs from the sha256 pinned in lumiere.metrics.c3d_weights"):
        verify_c3d_files(weights, mean, load=False)


def test_command_line(fake_files, monkeypatch, capsys):
    weights, mean = fake_files
    # The real loader: the tiny fake weights are no C3D, one line and exit 2, nothing recorded.
    assert main(["verify", "--weights", str(weights), "--mean", str(mean)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "array 'conv1a/W' has shape (6,), the C3D needs" in err[0]
    assert not record_path().exists()
    assert main(["verify", "--weights", str(weights.with_name("nope.npz")), "--mean", str(mean)]) == 2
    assert "not found at" in capsys.readouterr().err
    loaded = []
    monkeypatch.setattr(C3D, "from_tgan2_npz", classmethod(lambda cls, w, m: loaded.append((w, m))))
    assert main(["verify", "--weights", str(weights), "--mean", str(mean)]) == 0
    out = capsys.readouterr().out
    assert loaded and "recorded in" in out and f"C3D files ok. They come from: {WHERE_TO_GET}" in out
    assert main(["verify", "--weights", str(weights), "--mean", str(mean), "--mean-sha256", "1" * 64]) == 2
    assert "differs from the sha256 given on the command line" in capsys.readouterr().err


def test_the_ucf101_mode_refuses_c3d_files_that_changed_since_first_use(fake_files, monkeypatch):
    import lumiere.evaluation.ucf101 as ucf101_mode

    weights, mean = fake_files
    verify_c3d_files(weights, mean, load=False)
    monkeypatch.setattr(ucf101_mode, "VideoInceptionScore", lambda **kwargs: object())  # the loader, not under test here
    assert ucf101_mode.load_c3d_inception_score(str(weights), str(mean), 1) is not None
    weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(InputFileError, match="differs from the sha256 recorded.*evaluation.inception_score=false"):
        ucf101_mode.load_c3d_inception_score(str(weights), str(mean), 1)
