"""Suite-wide settings: CPU only, bounded threads, offline W&B, a private cache folder."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see Makefile: spin-waiting OpenMP on shared cores
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PROJECT_ROOT", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402
import torch  # noqa: E402

# One intra-op thread: on a shared 2-core machine a second OpenMP thread that gets descheduled
# makes every op spin-wait (measured 0.2 s vs 1.6-9 s for the same tiny forward).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts on one thread, whatever an earlier one set (a task's cpu_threads)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
