"""Feature-extraction throughput of the metrics on CPU (videos/s), printed.

- I3D (FVD features): 16 frames at 224x224, including the published preprocessing
  (TF1-legacy resize from 128x128, the base model's resolution) and without it.
- Domain classifier (in-domain FVD/IS features): 16 frames at 64x64.

Usage: python benchmarks/bench_metrics.py [--threads 2] [--batch 2] [--repeats 3]
Random-initialised networks: throughput does not depend on the weights.
"""

from __future__ import annotations

import argparse

import torch

from lumiere.metrics import I3D, DomainClassifier, preprocess_for_fvd

from _common import median_seconds  # beside this script: the benchmarks' shared helpers


def videos_per_second(fn, batch: torch.Tensor, repeats: int) -> float:
    """Videos per second of ``fn(batch)``: the median of ``repeats`` calls after a warm-up call
    (allocations, oneDNN kernel choice)."""
    with torch.no_grad():
        return batch.shape[0] / median_seconds(lambda: fn(batch), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)

    i3d = I3D().eval()
    base = torch.rand(args.batch, 3, 16, 128, 128, generator=generator) * 2 - 1
    resized = preprocess_for_fvd(base)
    i3d_only = videos_per_second(i3d, resized, args.repeats)
    i3d_with_pre = videos_per_second(lambda v: i3d(preprocess_for_fvd(v)), base, args.repeats)
    pre_only = videos_per_second(preprocess_for_fvd, base, args.repeats)

    domain = DomainClassifier({"shape": 4, "color": 6, "motion": 4, "direction": 4, "speed": 3}).eval()
    small = torch.rand(max(8, args.batch), 3, 16, 64, 64, generator=generator) * 2 - 1
    domain_rate = videos_per_second(domain.features, small, args.repeats)

    print(f"CPU threads: {args.threads}, batch {args.batch}, median of {args.repeats}")
    print(f"I3D 16x224x224 (features only):            {i3d_only:8.2f} videos/s")
    print(f"I3D 16x128x128 -> preprocess + features:   {i3d_with_pre:8.2f} videos/s")
    print(f"FVD preprocessing alone (16x128 -> 224):   {pre_only:8.2f} videos/s")
    print(f"Domain classifier 16x64x64 (features):     {domain_rate:8.2f} videos/s")
    print(f"ratio domain classifier / I3D:             {domain_rate / i3d_only:8.1f}x")


if __name__ == "__main__":
    main()
