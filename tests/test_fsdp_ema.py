"""FSDP with the EMA on CPU (gloo, 2 processes): each rank averages its own shard.

Two levels. torch FSDP directly on a tiny module (fast): the sharded EMA equals the EMA of an
unsharded copy trained on the same global batch, swaps in for the forward, is gathered for an
export, and round-trips through a full checkpoint file and a sharded (distributed-checkpoint)
folder. And the train task with `trainer=fsdp_cpu` on the tiny STUNet: an FSDP run reaches the
weights and EMA of a DDP run of the same steps, and a run stopped after 2 steps resumes to the
weights and EMA of an uninterrupted one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lumiere.errors import ConfigError
from lumiere.training import distributed
from lumiere.training.ema import ExponentialMovingAverage

from training_helpers import REPO_ROOT, compose_config, make_tiny_t2i_workspace

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: forked ranks are safe (libgomp is not fork-safe) and reductions fixed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------- torch FSDP, tiny module
class Unit(nn.Module):
    """An FSDP unit of its own (the temporal blocks' role)."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.linear(x))


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 10), Unit(10), Unit(10), nn.Linear(10, 3))
    net[0].requires_grad_(False)  # frozen weights in the root unit, beside the trainable head
    return net


def trainable(module: nn.Module):
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


def batch(step: int) -> torch.Tensor:
    return torch.randn(4, 6, generator=torch.Generator().manual_seed(step))


def sharded_ema_worker(rank: int, port: int, folder: str) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        net, reference = tiny_net(), tiny_net()
        ema = ExponentialMovingAverage(trainable(net), decay=0.9)
        reference_ema = ExponentialMovingAverage(trainable(reference), decay=0.9)
        root = FSDP(net, auto_wrap_policy=ModuleWrapPolicy({Unit}), use_orig_params=True,
                    device_id=torch.device("cpu"))
        ema.shard_for_fsdp(root, "full")
        straddling = ema.parameters["1.linear.weight"]  # 10 x 10, split over both ranks
        assert 0 < straddling.numel() < 100, "the unit's weight is not split: the test would not test sharding"

        optimizer = torch.optim.SGD([p for _, p in trainable(root)], lr=0.2)
        reference_optimizer = torch.optim.SGD([p for _, p in trainable(reference)], lr=0.2)
        for step in range(4):
            x = batch(step)
            root(x[2 * rank: 2 * rank + 2]).square().mean().backward()  # each rank: its half of the batch
            optimizer.step()
            optimizer.zero_grad()
            ema.update()
            reference(x).square().mean().backward()  # the whole batch: the mean of the two halves' losses
            reference_optimizer.step()
            reference_optimizer.zero_grad()
            reference_ema.update()

        # float32 gradients reduced in another order (reduce-scatter of 2 + 2 vs one batch of 4): ~1e-6 relative.
        tolerance = dict(rtol=1e-5, atol=1e-6)
        full = ema.state_dict()
        assert full["num_updates"] == 4
        if rank == 0:
            assert full["shadow"].keys() == reference_ema.shadow.keys()
            for name, value in reference_ema.shadow.items():
                torch.testing.assert_close(full["shadow"][name], value, **tolerance, msg=name)
            assert not torch.equal(full["shadow"]["3.weight"], reference.state_dict()["3.weight"])
        else:
            assert full["shadow"] == {}  # gathered on rank 0 only

        raw = {n: p.detach().clone() for n, p in trainable(net)}
        x = batch(99)
        with ema.swapped_in():
            sharded_out = root(x)
        with reference_ema.swapped_in():
            reference_out = reference(x)
        torch.testing.assert_close(sharded_out, reference_out, **tolerance)
        with distributed.gathered_weights(root, ema):
            if rank == 0:  # full-shape EMA weights, where export_pretrained reads them
                gathered = ema.parameters["3.weight"]
                assert gathered.shape == (3, 10)
                torch.testing.assert_close(gathered, reference_ema.shadow["3.weight"], **tolerance)
        for name, param in trainable(net):
            assert torch.equal(param, raw[name]), f"{name}: the raw weights were not restored"

        # A full checkpoint file (rank 0 writes it, every rank reads it, as Lightning does).
        path = os.path.join(folder, "ema.pt")
        if rank == 0:
            torch.save(full, path)
        dist.barrier()
        shards = {k: v.clone() for k, v in ema.shadow.items()}
        for value in ema.shadow.values():
            value.zero_()
        ema.load_state_dict(torch.load(path, weights_only=True))
        for name, value in shards.items():
            assert torch.equal(ema.shadow[name], value), name

        # A sharded folder: FSDP's sharded tensors through torch.distributed.checkpoint.
        ema._state_dict_type = "sharded"
        dcp.save({"ema": ema.state_dict()["shadow"]}, checkpoint_id=os.path.join(folder, "sharded"))
        for value in ema.shadow.values():
            value.zero_()
        template = ema.state_dict()
        dcp.load({"ema": template["shadow"]}, checkpoint_id=os.path.join(folder, "sharded"))
        ema.load_state_dict(template)
        for name, value in shards.items():
            assert torch.equal(ema.shadow[name], value), name
        for name, param in trainable(net):
            assert torch.equal(param, raw[name]), f"{name}: loading the sharded EMA changed the weights"
    finally:
        dist.destroy_process_group()


def test_sharded_ema_matches_an_unsharded_ema_and_round_trips_full_and_sharded_checkpoints(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(sharded_ema_worker, args=(free_port(), str(tmp_path)), nprocs=2, start_method="fork")


def test_ema_refuses_an_update_on_parameters_sharded_behind_its_back():
    net = tiny_net()
    ema = ExponentialMovingAverage(trainable(net), decay=0.9)
    net[3].weight.data = net[3].weight.data.reshape(-1)[:7].clone()  # what FSDP does to a parameter
    with pytest.raises(RuntimeError, match="shard_for_fsdp"):
        ema.update()


def test_sharded_fsdp_keeps_the_ema_but_needs_the_original_parameters():
    class WithEma(nn.Module):
        ema_decay = 0.999

    distributed.check_model_for_strategy(distributed.fsdp_strategy(), WithEma())
    with pytest.raises(ConfigError, match="use_orig_params=true"):
        distributed.check_model_for_strategy(distributed.fsdp_strategy(use_orig_params=False), WithEma())


# ---------------------------------------------------------------------------- the train task, tiny STUNet
STEPS = 3


def overrides(root: Path, run_name: str, max_steps: int = STEPS) -> list[str]:
    # The DDP-equals-one-process setup of test_cluster_training: an exact partition of the batches
    # over two ranks, SGD, gradient clipping on (trainer default) so FSDP's sharded norm runs.
    # Momentum gives the optimizer a state to resume (Lightning's FSDP loader fails on an empty one).
    return ["experiment=tiny_stunet", f"paths.data_dir={root / 'data'}", f"paths.artifacts_dir={root / 'artifacts'}",
            f"paths.log_dir={root / 'logs'}", "logger=csv", "trainer.enable_progress_bar=false",
            "trainer.limit_val_batches=0", "callbacks.sample_videos=null", "callbacks.first_batch=null",
            "cpu_threads=1", "++global_batch_size=4", "model.optimizer._target_=torch.optim.SGD",
            "model.optimizer.lr=0.05", "++model.optimizer.momentum=0.9", "data.shuffle_buffer=0", "data.temporal_crop=center",
            "data.epoch_length=null", f"trainer.max_steps={max_steps}",
            "callbacks.model_checkpoint.every_n_train_steps=1", f"run_name={run_name}"]


def train(root: Path, run_name: str, extra: list[str], max_steps: int = STEPS) -> dict:
    """train.py in a subprocess: Lightning starts rank 1 by re-running that command line."""
    env = {**os.environ, "PROJECT_ROOT": str(REPO_ROOT), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(REPO_ROOT / "train.py"), *overrides(root, run_name, max_steps), *extra]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    path = root / "logs" / "tiny_stunet" / run_name / "checkpoints" / "last.ckpt"
    if path.is_dir():  # state_dict_type: sharded
        return read_sharded_folder(path, root / f"{run_name}_{max_steps}.pt")
    return torch.load(path, map_location="cpu", weights_only=True)


def read_sharded_folder(folder: Path, scratch: Path) -> dict:
    """A sharded checkpoint folder as the full file's keys: the weights and the EMA shadow, gathered
    offline from the distributed checkpoint (no process group needed)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from lumiere.training.distributed import EMA_SHARDED_PREFIX

    dcp_to_torch_save(folder, scratch)
    model = torch.load(scratch, map_location="cpu", weights_only=True)["model"]
    meta = torch.load(folder / "meta.pt", map_location="cpu", weights_only=True)
    return {"global_step": meta["global_step"],
            "state_dict": {k: v for k, v in model.items() if not k.startswith(EMA_SHARDED_PREFIX)},
            "ema": {"shadow": {k[len(EMA_SHARDED_PREFIX):]: v for k, v in model.items() if k.startswith(EMA_SHARDED_PREFIX)}}}


def write_stage0_meta(root: Path) -> None:
    """The objective record a T2I stage export writes beside its unet/ (the tiny workspace's U-Net
    stands for one), with the objective the tiny STUNet experiment trains with."""
    from hydra.utils import instantiate

    from lumiere.training.export_meta import write_export_meta
    from lumiere.training.stages import T2I_META_FILE

    unet = root / "artifacts" / "t2i" / "unet"
    if not (unet / T2I_META_FILE).is_file():
        cfg = compose_config("train", overrides(root, "meta"), root / "meta")
        write_export_meta(unet, T2I_META_FILE, instantiate(cfg.model.objective))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    root = make_tiny_t2i_workspace(tmp_path_factory.mktemp("fsdp"))
    write_stage0_meta(root)
    ddp = train(root, "ddp", ["trainer=ddp_cpu"])
    fsdp = train(root, "fsdp", ["trainer=fsdp_cpu"])
    train(root, "stopped", ["trainer=fsdp_cpu"], max_steps=2)
    resumed = train(root, "stopped", ["trainer=fsdp_cpu"])  # ckpt_path=auto: from last.ckpt of step 2
    return {"ddp": ddp, "fsdp": fsdp, "resumed": resumed, "root": root}


def assert_same(actual: dict, expected: dict, **tolerance) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, **tolerance, msg=name)


@pytest.mark.slow
def test_fsdp_run_reaches_the_weights_and_ema_of_a_ddp_run(runs):
    ddp, fsdp = runs["ddp"], runs["fsdp"]
    assert ddp["global_step"] == fsdp["global_step"] == STEPS
    assert fsdp["ema"]["num_updates"] == STEPS
    # The zero-initialised output projections moved: the runs did train.
    assert fsdp["state_dict"]["network.mid_temporal.blocks.0.proj_out.weight"].abs().max() > 1e-4
    # float32 gradients reduced in another order (FSDP's reduce-scatter vs DDP's all-reduce, and
    # the clipping norm summed over shards): ~1e-6 relative.
    assert_same(fsdp["state_dict"], ddp["state_dict"], rtol=1e-5, atol=1e-6)
    assert_same(fsdp["ema"]["shadow"], ddp["ema"]["shadow"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_stopped_fsdp_run_resumes_to_the_weights_and_ema_of_an_uninterrupted_one(runs):
    resumed, fsdp = runs["resumed"], runs["fsdp"]
    assert resumed["global_step"] == STEPS and resumed["ema"]["num_updates"] == STEPS
    # The same reductions in the same order on the same shards: equal up to last-bit noise.
    assert_same(resumed["state_dict"], fsdp["state_dict"], rtol=0, atol=1e-6)
    assert_same(resumed["ema"]["shadow"], fsdp["ema"]["shadow"], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_sharded_checkpoint_folder_resumes_to_the_weights_and_ema_of_an_uninterrupted_run(runs):
    """state_dict_type: sharded writes last.ckpt as a folder (each rank its shards, the EMA's too);
    ckpt_path=auto resumes from it."""
    sharded = ["trainer=fsdp_cpu", "trainer.strategy.state_dict_type=sharded"]
    train(runs["root"], "sharded", sharded, max_steps=2)
    resumed = train(runs["root"], "sharded", sharded)
    fsdp = runs["fsdp"]
    assert resumed["global_step"] == STEPS
    assert set(resumed["state_dict"]) >= set(fsdp["state_dict"])
    assert_same({k: resumed["state_dict"][k] for k in fsdp["state_dict"]}, fsdp["state_dict"], rtol=0, atol=1e-6)
    assert_same(resumed["ema"]["shadow"], fsdp["ema"]["shadow"], rtol=0, atol=1e-6)



@pytest.mark.slow
def test_fsdp_with_the_frozen_weights_in_bf16_trains_like_fp32(runs):
    """model.frozen_dtype=bf16 under FSDP: the frozen U-Net is sharded in bf16 beside fp32 trainable
    units, and training runs; the trainable weights stay fp32 and follow the fp32 run's. bf16 keeps
    8 bits of mantissa (relative error 2^-8 in the frozen layers' outputs), so three SGD steps of
    lr 0.05 on gradients of order 1 drift by about 1e-4; 2e-3 leaves an order of magnitude."""
    bf16 = train(runs["root"], "frozen_bf16", ["trainer=fsdp_cpu", "model.frozen_dtype=bf16"])
    fsdp = runs["fsdp"]
    assert bf16["global_step"] == STEPS
    assert {v.dtype for v in bf16["state_dict"].values()} == {torch.float32}
    assert_same(bf16["state_dict"], fsdp["state_dict"], rtol=0, atol=2e-3)
    assert_same(bf16["ema"]["shadow"], fsdp["ema"]["shadow"], rtol=0, atol=2e-3)
    assert any((bf16["state_dict"][k] - fsdp["state_dict"][k]).abs().max() > 0 for k in fsdp["state_dict"])  # bf16 ran
