"""The `apps.py` command: every mode end to end, and one clear error line for every bad input.

Runs the task in-process through the real Hydra config (`conf/apps.yaml`) and the lead's
`run_task` wrapper (which prints `error: <message>` and exits with code 2 on a LumiereError);
one test runs `apps.py` as a subprocess to check the same from the shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lumiere.tasks import apps, run_task
from lumiere.viz import write_mp4

from apps_fixtures import FRAMES, SIZE, shared_tiny_chain
from training_helpers import REPO_ROOT, compose_config


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return shared_tiny_chain(tmp_path_factory)


@pytest.fixture(scope="module")
def files(tmp_path_factory, chain):
    """Input files: an image, a video, good and bad masks, a style export, prompt files."""
    root = tmp_path_factory.mktemp("apps_inputs")
    clip = chain.videos[0]  # (3, T, H, W)
    frames = ((clip.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    Image.fromarray(frames[0]).save(root / "image.png")
    write_mp4(root / "video.mp4", clip, fps=8)
    write_mp4(root / "video6.mp4", clip[:, :6], fps=8)  # 6 frames: not a multiple of the temporal factor 4
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(np.zeros((SIZE + 2, SIZE), np.uint8)).save(root / "mask_size.png")
    grey = mask.copy()
    grey[0:4, 0:8] = 128
    Image.fromarray(grey).save(root / "mask_grey.png")
    write_mp4(root / "mask4.mp4", torch.from_numpy(mask).float().div(127.5).sub(1)[None, None].expand(3, 4, -1, -1),
              fps=8)  # 4 frames for an 8-frame video
    (root / "garbage.png").write_bytes(b"not an image at all")
    (root / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    (root / "empty_prompts.txt").write_text("\n# only a comment\n")
    (root / "prompts.txt").write_text("a red circle moving right\na blue square\n")
    style = root / "style"  # a "fine-tuned" T2I export: the chain's U-Net, perturbed
    from lumiere.models import load_unet, save_unet

    unet = load_unet(os.path.join(chain.t2i_dir, "unet"))
    with torch.no_grad():
        for param in unet.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    save_unet(unet, style / "unet")
    return root


def run_apps(overrides: list[str], output_dir: Path):
    cfg = compose_config("apps", [*overrides, "num_inference_steps=2", "guidance_scale=2.0",
                                  f"paths.output_dir={output_dir}"], output_dir)
    return run_task(apps, cfg)


def expect_error(capsys, overrides, output_dir, pattern: str) -> str:
    """Run, expect exit code 2 and exactly one stderr line `error: ...` matching `pattern`; no outputs."""
    with pytest.raises(SystemExit) as exit_info:
        run_apps(overrides, output_dir)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert pattern in lines[0], lines[0]
    written = [p for p in output_dir.rglob("*") if p.is_file()] if output_dir.exists() else []
    assert not written, f"a failed run left files behind: {written}"
    return lines[0]


# ---------------------------------------------------------------------------- every mode
@pytest.mark.parametrize("mode", ["image_to_video", "inpaint_mask", "inpaint_box", "outpaint", "cinemagraph",
                                  "sdedit", "stylize"])
def test_every_mode_writes_complete_videos(tmp_path, chain, files, mode):
    ckpt = chain.base_ckpt if mode in ("sdedit", "stylize") else chain.conditional_ckpt
    common = [f"ckpt_path={ckpt}", f"prompt_file={files / 'prompts.txt'}", f"num_frames={FRAMES}"]
    per_mode = {
        "image_to_video": ["mode=image_to_video", f"image={files / 'image.png'}"],
        "inpaint_mask": ["mode=inpaint", f"video={files / 'video.mp4'}", f"mask={files / 'mask.png'}"],
        "inpaint_box": ["mode=inpaint", f"video={files / 'video.mp4'}", "box=[2,2,10,10]", "replace_known=true"],
        "outpaint": ["mode=outpaint", f"video={files / 'video.mp4'}", "pad=[0,0,4,4]"],
        "cinemagraph": ["mode=cinemagraph", f"image={files / 'image.png'}", f"mask={files / 'mask.png'}"],
        "sdedit": ["mode=sdedit", f"video={files / 'video.mp4'}", "strength=0.5"],
        "stylize": ["mode=stylize", f"style_dir={files / 'style'}", "alpha=0.8"],
    }[mode]
    run_apps([*common, *per_mode], tmp_path)
    out_dir = tmp_path / per_mode[0].split("=")[1]
    videos = sorted(out_dir.glob("0[01]_*.mp4"))
    assert len(videos) == 2, sorted(out_dir.rglob("*"))
    assert (out_dir / "sheet.png").is_file() and (out_dir / "prompts.txt").is_file()
    if mode != "stylize":
        assert list((out_dir / "input").glob("*.gif")), "the conditioning / input preview is missing"
    assert not [p for p in tmp_path.rglob("*partial*")], "temporary files were left behind"


# ---------------------------------------------------------------------------- bad inputs
def test_missing_file(tmp_path, capsys, chain, files):
    expect_error(capsys, ["mode=image_to_video", f"ckpt_path={chain.conditional_ckpt}", "prompt=a cat",
                          f"image={files / 'nope.png'}"], tmp_path, "not found")


def test_missing_mode_or_checkpoint_argument(tmp_path, capsys, chain, files):
    expect_error(capsys, [f"ckpt_path={chain.conditional_ckpt}", "prompt=a cat"], tmp_path, "give mode=<one of image_to_video")
    expect_error(capsys, ["mode=animate", f"ckpt_path={chain.conditional_ckpt}", "prompt=a cat"], tmp_path,
                 "unknown mode 'animate'")
    expect_error(capsys, ["mode=image_to_video", "prompt=a cat", f"image={files / 'image.png'}"], tmp_path,
                 "mode=image_to_video needs ckpt_path: set ckpt_path=PATH")


def test_missing_checkpoint(tmp_path, capsys, files):
    expect_error(capsys, ["mode=image_to_video", f"ckpt_path={files / 'nope.ckpt'}", "prompt=a cat",
                          f"image={files / 'image.png'}"], tmp_path, "checkpoint not found")


@pytest.mark.parametrize("what", ["image", "video", "mask"])
def test_unreadable_file(tmp_path, capsys, chain, files, what):
    overrides = {"image": ["mode=image_to_video", f"image={files / 'garbage.png'}"],
                 "video": ["mode=sdedit", f"video={files / 'garbage.mp4'}"],
                 "mask": ["mode=inpaint", f"video={files / 'video.mp4'}", f"mask={files / 'garbage.mp4'}"]}[what]
    expect_error(capsys, [*overrides, f"ckpt_path={chain.conditional_ckpt}", "prompt=a cat"], tmp_path, "cannot")


def test_mask_of_another_size(tmp_path, capsys, chain, files):
    expect_error(capsys, ["mode=inpaint", f"ckpt_path={chain.conditional_ckpt}", "prompt=a cat",
                          f"video={files / 'video.mp4'}", f"mask={files / 'mask_size.png'}"], tmp_path,
                 "but the video is")


def test_mask_of_another_length(tmp_path, capsys, chain, files):
    expect_error(capsys, ["mode=inpaint", f"ckpt_path={chain.conditional_ckpt}", "prompt=a cat",
                          f"video={files / 'video.mp4'}", f"mask={files / 'mask4.mp4'}"], tmp_path,
                 "has 4 frames but the video has 8")


def test_mask_not_binary(tmp_path, capsys, chain, files):
    expect_error(capsys, ["mode=cinemagraph", f"ckpt_path={chain.conditional_ckpt}", "prompt=a cat",
                          f"image={files / 'image.png'}", f"mask={files / 'mask_grey.png'}"], tmp_path,
                 "not binary")


@pytest.mark.parametrize("alpha", [-0.2, 1.3])
def test_alpha_outside_zero_one(tmp_path, capsys, chain, files, alpha):
    expect_error(capsys, ["mode=stylize", f"ckpt_path={chain.base_ckpt}", "prompt=a cat", f"alpha={alpha}",
                          f"style_dir={files / 'style'}"], tmp_path, "alpha must lie in [0, 1]")


@pytest.mark.parametrize("strength", [0.0, 1.5])
def test_sdedit_strength_outside_zero_one(tmp_path, capsys, chain, files, strength):
    expect_error(capsys, ["mode=sdedit", f"ckpt_path={chain.base_ckpt}", "prompt=a cat", f"strength={strength}",
                          f"video={files / 'video.mp4'}"], tmp_path, "strength must lie in (0, 1]")


def test_frame_count_not_divisible_by_the_temporal_factor(tmp_path, capsys, chain, files):
    expect_error(capsys, ["mode=image_to_video", f"ckpt_path={chain.conditional_ckpt}", "prompt=a cat",
                          f"image={files / 'image.png'}", "num_frames=6"], tmp_path, "not divisible")
    expect_error(capsys, ["mode=inpaint", f"ckpt_path={chain.conditional_ckpt}", "prompt=a cat",
                          f"video={files / 'video6.mp4'}", "box=[2,2,8,8]"], tmp_path, "not divisible")


def test_empty_prompt_file(tmp_path, capsys, chain, files):
    expect_error(capsys, ["mode=image_to_video", f"ckpt_path={chain.conditional_ckpt}",
                          f"prompt_file={files / 'empty_prompts.txt'}", f"image={files / 'image.png'}"], tmp_path,
                 "prompt file is empty")


def test_a_conditional_mode_on_a_base_checkpoint(tmp_path, capsys, chain, files):
    expect_error(capsys, ["mode=image_to_video", f"ckpt_path={chain.base_ckpt}", "prompt=a cat",
                          f"image={files / 'image.png'}"], tmp_path,
                 "is a TextToVideoModule checkpoint; expected a ConditionalVideoModule checkpoint")


def test_sdedit_and_stylize_take_the_conditional_checkpoint_too(tmp_path, chain, files):
    """The conditional model generates from text alone (C = 0, M = 0): SDEdit and stylization accept it."""
    run_apps(["mode=sdedit", f"ckpt_path={chain.conditional_ckpt}", "prompt=a cat", f"video={files / 'video.mp4'}",
              "strength=0.5"], tmp_path)
    assert len(list((tmp_path / "sdedit").glob("00_*.mp4"))) == 1


def test_the_entry_point_reports_one_error_line_and_exit_code_2(tmp_path, chain, files):
    command = [sys.executable, str(REPO_ROOT / "apps.py"), "mode=sdedit", f"ckpt_path={chain.base_ckpt}",
               "prompt=a cat", f"video={files / 'video.mp4'}", "strength=2", f"paths.output_dir={tmp_path}",
               f"hydra.run.dir={tmp_path / 'hydra'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PROJECT_ROOT": str(REPO_ROOT)})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == "error: SDEdit strength must lie in (0, 1], got 2.0", lines[-3:]
    assert not list(tmp_path.glob("sdedit/*"))


def test_the_gallery_writes_every_application(tmp_path, chain):
    from lumiere.apps.gallery import main

    code = main(["--conditional-ckpt", chain.conditional_ckpt, "--base-ckpt", chain.base_ckpt, "--style-dir",
                 chain.style_dir, "--out", str(tmp_path), "--frames", str(FRAMES), "--steps", "2"])
    assert code == 0
    for name in ("inputs", "image_to_video", "inpaint", "outpaint", "cinemagraph", "sdedit", "stylized"):
        assert (tmp_path / name / "sheet.png").is_file(), name
        assert list((tmp_path / name).glob("00_*.gif")), name
    assert main(["--conditional-ckpt", str(tmp_path / "nope.ckpt"), "--base-ckpt", chain.base_ckpt,
                 "--out", str(tmp_path / "bad")]) == 2
