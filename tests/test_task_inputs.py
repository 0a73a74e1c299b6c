"""Bad inputs to the entry points end in one `error: ...` line and exit code 2, before anything is written.

Every case of `CASES` runs the real entry point (`generate.py`, `apps.py`, `evaluate.py`) as a
subprocess and checks: exit status 2; the last stderr line starts with `error: ` and holds the
expected fragment, and no other line of the output mentions it (no library notice, no repeated
message); no Traceback; no file under the run folder other than Hydra's own (`.hydra/`, `*.log`).

To add a case, add a row to `CASES`: (entry point, overrides, fragment of the error line). Overrides
may name the workspace's files in braces (see `Workspace.placeholders`): checkpoints of every stage
({base} STUNet, {t2i} text-to-image, {ssr} inflated SSR, {ssr0} SSR stage 0), inputs ({video},
{image}, {style}, {data}, {blank_line_prompts}), {a_file} (a regular file: no folder can be made in
it) and {readonly} (a read-only folder). A row may end with an env dict for the subprocess; with
`FAIL_WRITES_AFTER=N` the N+1-th GIF write raises ENOSPC (a full disk; see `sitecustomize.py` below).
Every run's out_dir is inside its run folder unless the case sets another one.

The cases run two at a time (the checks of a table row are in `test_a_bad_input_fails_in_one_line`);
they and the workspace they need are `slow`. The option checks the tasks share (`lumiere.tasks.generation`)
are also tested in-process at the end, fast, with more values than the table runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from training_helpers import REPO_ROOT, compose_config, make_tiny_dataset

STUNET_FPS = 16  # the base stage below is trained at data.target_fps=16 (the tiny experiments' default is 8)
SCRIPTS = {"generate": "generate.py", "apps": "apps.py", "evaluate": "evaluate.py"}
SAMPLE = ["num_frames=8", "num_inference_steps=2"]  # cases that get as far as sampling stay cheap
ENOSPC = {"FAIL_WRITES_AFTER": "1"}

# (entry point, overrides, fragment of the one error line[, env])
CASES = [
    # ------------------------------------------------------------------ generate.py
    ("generate", ["prompts=[a cat]"], "ckpt_path is not set: set ckpt_path=PATH"),
    ("generate", ["ckpt_path={ssr}", "prompts=[a cat]"],
     "is a SuperResolutionModule checkpoint; expected a TextToVideoModule or ConditionalVideoModule checkpoint"),
    ("generate", ["ckpt_path={t2i}", "prompts=[a cat]"],
     "is a TextToImageModule checkpoint; expected a TextToVideoModule or ConditionalVideoModule checkpoint"),
    ("generate", ["ckpt_path={base}", "ssr_ckpt_path={t2i}", "prompts=[a cat]"],
     "is a TextToImageModule checkpoint; expected a SuperResolutionModule checkpoint"),
    ("generate", ["ckpt_path={base}", "prompts=[a cat]", "num_frames=0"],
     "num_frames must be a whole number >= 1 (null: the checkpoint's clip length), got 0"),
    ("generate", ["ckpt_path={base}", "prompts=[a cat]", "num_inference_steps=0"],
     "num_inference_steps must be a whole number >= 1"),
    ("generate", ["ckpt_path={base}", "prompts=[a cat]", "guidance_scale=-3"],
     "guidance_scale must be a number >= 0 (0: ignore the prompt, 1: no guidance"),
    ("generate", ["ckpt_path={base}", "prompts=[a cat]", "batch_size=0"], "batch_size must be a whole number >= 1"),
    ("generate", ["ckpt_path={base}", "prompts=[a cat]", "fps=0"], "fps must be a number > 0"),
    ("generate", ["ckpt_path={base}", 'prompts=[a cat,""]'], "prompts[1] is empty: an empty prompt is not a prompt"),
    ("generate", ["ckpt_path={base}", "prompt_file={blank_line_prompts}"], "line 2 is empty"),
    ("generate", ["ckpt_path={base}", "prompts=[a cat]", "out_dir={a_file}/videos"], "cannot write to out_dir"),
    ("generate", ["ckpt_path={base}", "prompts=[a cat]", "out_dir={readonly}/videos"], "cannot write to out_dir"),
    ("generate", ["ckpt_path={base}", "prompts=[a cat]", *SAMPLE], "could not write batch_00000 under", ENOSPC),
    # ------------------------------------------------------------------ apps.py
    ("apps", ["mode=sdedit", "ckpt_path={base}", "prompt=a cat", "video={video}", "strength=abc"],
     "SDEdit strength must be a number in (0, 1], got 'abc'"),
    ("apps", ["mode=sdedit", "ckpt_path={base}", "prompt=a cat", "video={video}", "num_inference_steps=abc"],
     "num_inference_steps must be a whole number >= 1"),
    ("apps", ["mode=stylize", "ckpt_path={base}", "prompt=a cat", "style_dir={style}", "alpha=abc"],
     "style alpha must be a number in [0, 1]"),
    ("apps", ["mode=outpaint", "ckpt_path={base}", "prompt=a cat", "video={video}", "pad=[0,0,1000000,0]"],
     "outpainting allows at most 8x the video's longer side (128 px)"),
    ("apps", ["mode=image_to_video", "ckpt_path={base}", "prompt=a cat", "image={image}"],
     "is a TextToVideoModule checkpoint; expected a ConditionalVideoModule checkpoint"),
    ("apps", ["mode=sdedit", "ckpt_path={t2i}", "prompt=a cat", "video={video}"],
     "is a TextToImageModule checkpoint; expected a TextToVideoModule or ConditionalVideoModule checkpoint"),
    ("apps", ["mode=stylize", "ckpt_path={base}", "prompt=a cat", "style_dir={style}", "num_frames=0"],
     "num_frames must be a whole number >= 1"),
    ("apps", ["mode=sdedit", "ckpt_path={base}", "prompt=a cat", "video={video}", "out_dir={a_file}/sdedit"],
     "cannot write to out_dir"),
    ("apps", ["mode=sdedit", "ckpt_path={base}", "prompt=a cat", "video={video}", "out_dir={readonly}/sdedit"],
     "cannot write to out_dir"),
    # ------------------------------------------------------------------ evaluate.py
    ("evaluate", ["ckpt_path=???"], "ckpt_path is not set: set ckpt_path=PATH"),
    ("evaluate", ["ckpt_path={ssr}", "evaluation.data_dir={data}"],
     "is a SuperResolutionModule checkpoint; expected a TextToVideoModule or ConditionalVideoModule checkpoint"),
]


def case_id(case) -> str:
    entry, overrides = case[0], case[1]
    words = [override.replace("{", "").replace("}", "") for override in overrides
             if not override.startswith(("prompt=a cat", "prompts=[a cat]", "video=", "image=", "style_dir="))]
    return f"{entry}-{'-'.join(words)[:70] or 'defaults'}" + ("-enospc" if len(case) > 3 else "")


CASE_IDS = [case_id(case) for case in CASES]


def skip_reason(case) -> str | None:
    if "{readonly}" in " ".join(case[1]) and os.geteuid() == 0:
        return "root writes into read-only folders"
    return None

SITECUSTOMIZE = '''
import errno, os

if os.environ.get("FAIL_WRITES_AFTER"):  # a full disk: the GIF writes after the first N raise ENOSPC
    import lumiere.training.callbacks as callbacks

    _budget = [int(os.environ["FAIL_WRITES_AFTER"])]
    _write_gif = callbacks.write_gif

    def write_gif(*args, **kwargs):
        if _budget[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        _budget[0] -= 1
        return _write_gif(*args, **kwargs)

    callbacks.write_gif = write_gif
'''


@dataclass
class Workspace:
    root: Path
    placeholders: dict[str, str]
    hooks: Path   # holds sitecustomize.py (fault injection, off unless FAIL_WRITES_AFTER is set)


def _train(root: Path, experiment: str, *extra: str) -> str:
    from lumiere.tasks import train

    overrides = [f"experiment={experiment}", f"paths.data_dir={root / 'data'}",
                 f"paths.artifacts_dir={root / 'artifacts'}", f"paths.output_dir={root / experiment}", "logger=csv",
                 "trainer.enable_progress_bar=false", "trainer.limit_val_batches=0", "trainer.max_steps=1",
                 "callbacks.model_checkpoint.every_n_train_steps=1", *extra]
    train(compose_config("train", overrides, root / experiment))
    return str(root / experiment / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    """A checkpoint of every stage (one training step each, through the tiny experiments) and input files."""
    from PIL import Image

    from lumiere.viz import write_mp4

    root = tmp_path_factory.mktemp("task_inputs")
    make_tiny_dataset(root / "data")
    torch.manual_seed(0)
    ckpts = {
        "t2i": _train(root, "tiny_t2i", f"export_dir={root / 'artifacts' / 't2i'}"),
        "base": _train(root, "tiny_stunet", f"data.target_fps={STUNET_FPS}"),
        "ssr0": _train(root, "tiny_ssr_t2i", f"export_dir={root / 'artifacts' / 'ssr'}"),
    }
    ckpts["ssr"] = _train(root, "tiny_ssr")
    inputs = root / "inputs"
    inputs.mkdir()
    clip = torch.rand(3, 8, 16, 16) * 2 - 1
    write_mp4(inputs / "video.mp4", clip, fps=8)
    Image.fromarray(((clip[:, 0].permute(1, 2, 0) + 1) * 127.5).byte().numpy()).save(inputs / "image.png")
    (inputs / "blank_line_prompts.txt").write_text("a red circle\n\na blue square\n")
    (inputs / "a_file").write_text("a file, not a folder\n")
    readonly = inputs / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    hooks = root / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    placeholders = {**ckpts, "video": str(inputs / "video.mp4"), "image": str(inputs / "image.png"),
                    "style": str(root / "artifacts" / "t2i"), "data": str(root / "data" / "tiny"),
                    "blank_line_prompts": str(inputs / "blank_line_prompts.txt"), "a_file": str(inputs / "a_file"),
                    "readonly": str(readonly)}
    yield Workspace(root, placeholders, hooks)
    readonly.chmod(0o755)


def run_case(workspace: Workspace, index: int) -> tuple[subprocess.CompletedProcess, Path, list[str]]:
    """Run CASES[index]; returns the process, its run folder and its overrides (placeholders filled in)."""
    entry, overrides, _, *rest = CASES[index]
    run_dir = workspace.root / "runs" / f"{index:03d}"
    overrides = [override.format(**workspace.placeholders) for override in overrides]
    command = [sys.executable, str(REPO_ROOT / SCRIPTS[entry]), *overrides, f"hydra.run.dir={run_dir}",
               f"paths.output_dir={run_dir}", f"paths.log_dir={workspace.root / 'logs'}", "cpu_threads=1"]
    env = {**os.environ, "PROJECT_ROOT": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **(rest[0] if rest else {}),
           "PYTHONPATH": os.pathsep.join([str(workspace.hooks), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=workspace.root)
    return done, run_dir, overrides


@pytest.fixture(scope="module")
def outcomes(workspace, request):
    """The selected cases of this module, run two at a time: {case id: (process, run folder, overrides)}."""
    selected = {item.callspec.id for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")
                and item.originalname == "test_a_bad_input_fails_in_one_line"}
    indices = [index for index, name in enumerate(CASE_IDS) if name in selected and not skip_reason(CASES[index])]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda index: run_case(workspace, index), indices))
    return {CASE_IDS[index]: result for index, result in zip(indices, results)}


def files_written(folder: Path) -> list[str]:
    """Files under `folder` except Hydra's own (.hydra/, *.log)."""
    if not folder.exists():
        return []
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")
                  if path.is_file() and ".hydra" not in path.relative_to(folder).parts and path.suffix != ".log")


def test_the_table_has_unique_case_ids():
    assert len(set(CASE_IDS)) == len(CASE_IDS), [name for name in CASE_IDS if CASE_IDS.count(name) > 1]


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_a_bad_input_fails_in_one_line(workspace, outcomes, case):
    entry, _, fragment, *_ = CASES[case]
    if skip_reason(CASES[case]):
        pytest.skip(skip_reason(CASES[case]))
    done, run_dir, overrides = outcomes[CASE_IDS[case]]
    stderr = [line for line in done.stderr.splitlines() if line.strip()]
    context = f"{entry} {' '.join(overrides)}\n--- stderr (tail):\n" + "\n".join(stderr[-15:])
    assert done.returncode == 2, context
    assert "Traceback" not in done.stderr, context
    assert stderr and stderr[-1].startswith("error: "), context
    assert fragment in stderr[-1], context
    mentions = [line for line in [*stderr[:-1], *done.stdout.splitlines()] if fragment in line]
    assert not mentions, f"the problem is reported more than once: {mentions}\n{context}"
    assert not files_written(run_dir), f"a refused run wrote {files_written(run_dir)}\n{context}"
    for override in overrides:
        if override.startswith("out_dir="):
            assert not files_written(Path(override.split("=", 1)[1])), context


@pytest.mark.slow
def test_a_batch_whose_write_fails_leaves_no_half_written_folder(workspace, outcomes):
    """The ENOSPC case wrote one GIF of its batch before the disk 'filled': nothing of it is left, no temp folder."""
    index = next(index for index, case in enumerate(CASES) if len(case) > 3)
    if CASE_IDS[index] not in outcomes:
        pytest.skip("the full-disk case is not selected")
    done, run_dir, _ = outcomes[CASE_IDS[index]]
    assert "No space left on device" in done.stderr.splitlines()[-1], done.stderr[-2000:]
    assert not [path for path in run_dir.rglob("*") if "partial" in path.name], "a staging folder was left behind"


@pytest.mark.slow
def test_generate_writes_clips_at_the_training_frame_rate_and_replaces_a_batch_whole(workspace, tmp_path):
    """fps=null: the base stage's data.target_fps, stored in its checkpoint; a rerun renames a new batch folder in."""
    import av

    from lumiere.tasks import generate

    out_dir = tmp_path / "videos"
    overrides = [f"ckpt_path={workspace.placeholders['base']}", "prompts=[a red circle,a blue square]",
                 f"out_dir={out_dir}", *SAMPLE, f"paths.log_dir={tmp_path / 'logs'}"]
    for _ in range(2):  # the second run replaces batch_00000 with a complete new one
        assert generate(compose_config("generate", overrides, tmp_path))["num_videos"] == 2
    batch = out_dir / "base" / "batch_00000"
    assert sorted(path.name for path in batch.glob("*.mp4")) == ["00_a_red_circle.mp4", "01_a_blue_square.mp4"]
    assert {"all.gif", "prompts.txt", "sheet.png"} <= {path.name for path in batch.iterdir()}
    assert sorted(path.name for path in out_dir.rglob("*") if path.name.startswith(".")) == []
    with av.open(str(batch / "00_a_red_circle.mp4")) as container:
        assert float(container.streams.video[0].average_rate) == STUNET_FPS


# ---------------------------------------------------------------------------- the shared option checks, in-process
@pytest.mark.parametrize(("check", "value", "fragment"), [
    ("num_frames", -8, "num_frames must be a whole number >= 1"),
    ("num_frames", 8.5, "num_frames must be a whole number >= 1"),
    ("num_frames", "abc", "got 'abc'"),
    ("num_frames", True, "got True"),
    ("seed", "abc", "seed must be a whole number >= 0"),
    ("guidance_scale", "nan", "guidance_scale must be a number >= 0"),
    ("scheduler", "euler", "scheduler must be one of ddpm"),
    ("flag", "maybe", "must be true or false, got 'maybe'"),
    ("ssr", {"window": 0}, "ssr.window must be a whole number >= 1"),
    ("ssr", {"guidance_scale": -1}, "ssr.guidance_scale must be a number >= 0"),
    ("ssr", {"windows": 4}, "unknown ssr option(s) windows"),
    ("prompts", [""], "prompts[0] is empty"),
    ("prompts", ["a cat", None], "prompts[1] is not a prompt"),
    ("pad", [0, 0, "abc", 0], "pad must be one or four non-negative integers"),
    ("pad", [0, 0, 1.5, 0], "pad must be one or four non-negative integers"),
    ("box", ["abc", 0, 8, 8], "a box is four whole pixel coordinates"),
    ("alpha", "abc", "style alpha must be a number in [0, 1]"),
    ("strength", "abc", "SDEdit strength must be a number in (0, 1]"),
    ("canvas", [0, 0, 0, 200], "outpainting allows at most 8x the video's longer side (128 px)"),
    ("canvas_budget", [0, 0, 0, 8], "pixel budget of outpainting"),
])
def test_an_option_check_refuses_in_one_line(check, value, fragment):
    from lumiere.apps.inputs import check_canvas, check_pad
    from lumiere.apps.masks import check_box
    from lumiere.apps.stylize import check_alpha
    from lumiere.errors import LumiereError
    from lumiere.tasks import generation
    from lumiere.tasks.applications import check_strength

    checks = {
        "num_frames": lambda v: generation.whole_number(v, "num_frames", null="the checkpoint's clip length"),
        "seed": lambda v: generation.whole_number(v, "seed", minimum=0),
        "guidance_scale": lambda v: generation.sampling_options({"guidance_scale": v}),
        "scheduler": lambda v: generation.sampling_options({"scheduler": v}),
        "flag": lambda v: generation.flag(v, "replace_known"),
        "ssr": generation.check_ssr_options,
        "prompts": lambda v: generation.read_prompts(v, None),
        "pad": check_pad,
        "box": lambda v: check_box(v, 16, 16),
        "alpha": check_alpha,
        "strength": check_strength,
        "canvas": lambda v: check_canvas(8, 16, 16, v),
        "canvas_budget": lambda v: check_canvas(4096, 1024, 1024, v),
    }
    with pytest.raises(LumiereError) as error:
        checks[check](value)
    assert fragment in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_null_means_the_checkpoint_default_and_zero_never_does():
    from lumiere.errors import ConfigError
    from lumiere.tasks.generation import sampling_options, whole_number

    assert sampling_options({}) == {"num_inference_steps": None, "guidance_scale": None, "scheduler": None}
    assert sampling_options({"num_inference_steps": 2, "guidance_scale": 0}) == {
        "num_inference_steps": 2, "guidance_scale": 0.0, "scheduler": None}
    assert whole_number(None, "num_frames", null="the checkpoint's") is None
    with pytest.raises(ConfigError, match="got 0"):
        sampling_options({"num_inference_steps": 0})
    with pytest.raises(ConfigError, match="got null"):
        whole_number(None, "seed", minimum=0)


def test_a_missing_value_anywhere_in_the_config_is_named(tmp_path):
    from lumiere.errors import ConfigError
    from lumiere.tasks.generation import check_no_missing

    cfg = compose_config("generate", ["ckpt_path=x.ckpt", "+extra.items=[1,???]"], tmp_path)
    with pytest.raises(ConfigError, match=r"^extra.items\[1\] is not set: set extra.items\[1\]=VALUE$"):
        check_no_missing(cfg)
    apps_cfg = compose_config("apps", ["mode=sdedit"], tmp_path)  # out_dir interpolates mode: never resolved here
    with pytest.raises(ConfigError, match=r"^ckpt_path is not set: set ckpt_path=PATH$"):
        check_no_missing(apps_cfg)


def test_the_evaluation_generator_refuses_zero_steps_before_loading(tmp_path):
    from lumiere.errors import ConfigError
    from lumiere.evaluation.generated import CheckpointGenerator

    with pytest.raises(ConfigError, match="evaluation.sampling.num_inference_steps must be a whole number >= 1"):
        CheckpointGenerator(str(tmp_path / "missing.ckpt"), torch.device("cpu"), num_inference_steps=0)


def test_blank_lines_at_the_end_of_a_prompt_file_are_no_prompts(tmp_path):
    from lumiere.tasks.generation import read_prompts

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# a comment\na red circle\n  a blue square  \n\n\n")
    assert read_prompts("a cat", str(prompts)) == ["a cat", "a red circle", "a blue square"]
