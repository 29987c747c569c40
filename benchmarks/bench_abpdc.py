"""ABPDC's cost against a plain convolution of the same shape, and one case's classifier inference.

Prints, in one run: the machine; forward+backward time of every difference-convolution variant relative to a plain
``Conv3d`` with the same channels, kernel and input, at the shapes the backbone's stages actually see (target for
``abpdc``: at most 1.3x); and the time of one case through both branches of the default classifier (T1_sag + CT_bone,
working sizes of :mod:`cspineai.preprocess`; target under 1 s on two CPU cores), with the model's size.

    .venv/bin/python benchmarks/bench_abpdc.py [--threads 2] [--repeats 10]

Timings are medians over ``--repeats`` runs after two warm-up runs; on a shared machine they vary with its load.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

from cspineai.environment import machine_summary


def median_time(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_layers(repeats: int) -> None:
    import torch

    from cspineai.nn.abpdc import VARIANTS, DifferenceConv

    # (batch, channels in, channels out, D, H, W): level-1/2/3 units of the sagittal branch at training batch 4
    shapes = [(4, 16, 16, 8, 64, 64), (4, 32, 32, 4, 32, 32), (4, 64, 64, 2, 16, 16)]
    print("\nforward+backward, time relative to a plain Conv3d of the same shape (3x3x3, stride 1); 'wide': a plain"
          "\nConv3d with twice the output channels, the one call abpdc makes (its floor, see cspineai.nn.abpdc)")
    print(f"{'input (B, C, D, H, W)':<26}{'conv ms':>9}" + "".join(f"{v:>8}" for v in VARIANTS if v != "conv")
          + f"{'wide':>8}")
    for b, cin, cout, d, h, w in shapes:
        x = torch.randn(b, cin, d, h, w, requires_grad=True)
        torch.manual_seed(0)
        timings = {}
        layers = {v: DifferenceConv(3, cin, cout, 3, variant=v) for v in VARIANTS}
        layers["wide"] = torch.nn.Conv3d(cin, 2 * cout, 3, padding=1, bias=False)
        for name, layer in layers.items():

            def step(layer=layer, x=x):
                x.grad = None
                layer.zero_grad(set_to_none=True)
                layer(x).square().mean().backward()

            timings[name] = median_time(step, repeats)
        base = timings["conv"]
        ratios = "".join(f"{timings[v] / base:>7.2f}x" for v in [*VARIANTS, "wide"] if v != "conv")
        print(f"{str((b, cin, d, h, w)):<26}{base * 1e3:>9.1f}{ratios}")


def bench_classifier(repeats: int) -> None:
    import torch

    from cspineai.nn.classifier import build_classifier
    from cspineai.preprocess import WORKING_GRIDS

    print("\none case, both branches, inference (eval mode, no gradient), working sizes")
    for variant in ("conv", "cdc", "abpdc"):
        model = build_classifier({"variant": variant}).eval()
        inputs = {s: torch.rand(1, 1, *WORKING_GRIDS[s].size) for s in model.series}
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        with torch.no_grad():
            seconds = median_time(lambda model=model, inputs=inputs: model(inputs), repeats)
        sizes = ", ".join(f"{s} {tuple(WORKING_GRIDS[s].size)}" for s in model.series)
        millions = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"  {variant:<6} {seconds * 1e3:7.1f} ms   ({sizes}; {millions:.2f} M parameters, "
              f"{buffer.tell() / 2**20:.1f} MB state dict)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the target machine)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print("machine:", machine_summary())
    bench_layers(args.repeats)
    bench_classifier(args.repeats)


if __name__ == "__main__":
    main()
