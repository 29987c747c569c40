"""Faithfulness of the neck-pain classifier's saliency maps on synthetic cases whose causes are known.

For N phantom cases (generated from ``--seed`` on, or the ``test`` split of a cohort manifest), computes each method's
maps (:mod:`cspineai.saliency`) and prints, per method and branch:

- the pointing game on positive cases (label 1) whose causal mask marks something in that series: the fraction whose map
  maximum lies within ``--margin-mm`` of the causal region (target >= 0.8), next to the chance rate of a uniformly
  random point (the dilated region's share of the volume);
- the deletion AUC (class-1 probability while the most salient working-grid voxels are replaced by a blurred copy; lower
  is better) against the same curve in random order, and the share of cases where the map's AUC is lower than
  random's by at least 0.005;
- seconds per case of each method, and the machine.

    .venv/bin/python benchmarks/bench_saliency.py --model runs/pain/best.pt --n 20 --seed 100000
    .venv/bin/python benchmarks/bench_saliency.py --model pain-t1sag-ctbone --manifest cohort/manifest.csv --n 50

``--model`` is a checkpoint (``cspineai train`` output or an exported model file) or a registry id. The figures only
mean something for a trained model; choose seeds the model was not trained on. Timings vary with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from cspineai.environment import machine_summary


def load_classifier(spec: str, device: str = "cpu"):
    """The classifier from a checkpoint / model file path, or from the model registry by id (eval mode)."""
    from cspineai.errors import CSpineModelError
    from cspineai.nn.classifier import build_classifier
    from cspineai.training.checkpoint import load_checkpoint, model_weights

    if not Path(spec).is_file():
        from cspineai.models.registry import load_model

        model, _, _ = load_model(spec, device=device)
        return model
    state = load_checkpoint(spec)
    config = dict(state.get("config") or {})
    if "task" in config:  # a training run's configuration: the task builds its model
        from cspineai.training.config import resolve_config
        from cspineai.training.tasks import get_task

        config = resolve_config(config, spec)
        model = get_task(config["task"]).build_model(config)
    else:  # a bare classifier configuration (cspineai.nn.classifier.build_classifier)
        model = build_classifier(config)
    try:
        model.load_state_dict(model_weights(state))
    except RuntimeError as error:
        raise CSpineModelError(f"{spec}: weights do not fit the model its configuration describes ({error})") from None
    return model.to(device).eval()


def synthetic_cases(n: int, seed: int, resolution: str):
    """``(case_id, series, causal masks, label)`` of phantom cases ``seed .. seed + n - 1``."""
    from cspineai.phantom import generate_case

    for i in range(n):
        case = generate_case(seed + i, resolution=resolution, threads=1)
        yield f"phantom-{seed + i}", case.series, case.causal_mask, int(case.label)


def manifest_cases(manifest: str, n: int, series: tuple[str, ...]):
    """The first ``n`` cases of the manifest's test split (all cases when it has no split) with their causal masks."""
    from cspineai.io import read_volume
    from cspineai.manifest import read_manifest

    cases = read_manifest(manifest, require=(*series, "label", "causal_mask"))
    test = [c for c in cases if c.split == "test"] or cases
    for case in test[:n]:
        folder = case.path("causal_mask").parent
        masks = {s: read_volume(folder / f"causal_mask_{s}.nii.gz", allow_constant=True) for s in series}
        yield case.case_id, {s: read_volume(case.path(s)) for s in series}, masks, int(case.label)


def evaluate_case(model, series, masks, label, methods, args, rng):
    """Per method: seconds, per-branch pointing results (label 1 only) and deletion AUCs (map, random)."""
    import torch

    from cspineai.metrics.saliency import (
        blurred_baseline,
        deletion_curve,
        deletion_order,
        distance_to_region,
        pointing_game,
        random_order,
    )
    from cspineai.preprocess import model_grids, prepare_case
    from cspineai.saliency import (
        blurred_baselines,
        class_probability,
        default_smoothing,
        to_series_grid,
        working_saliency,
    )

    names = tuple(model.series)
    prepared = prepare_case(series, names, model_grids(model))
    device = next(model.parameters()).device
    tensors = {s: prepared[s].tensor[None].to(device) for s in names}
    baselines, random_auc, chance = {}, {}, {}
    spacings = {s: prepared[s].grid.spacing[::-1] for s in names}
    for s in names:
        image = prepared[s].tensor[0].numpy()
        baselines[s] = blurred_baseline(image, spacings[s], args.blur_mm)
        score = class_probability(model, tensors, s)
        random_auc[s] = deletion_curve(score, image, baselines[s], random_order(image.size, rng), args.steps).auc
        mask = np.asarray(masks[s].array) > 0
        if label == 1 and mask.any():
            chance[s] = float((distance_to_region(mask, masks[s].spacing[::-1]) <= args.margin_mm).mean())
    results = {}
    use_blurred = "integrated_gradients" in methods and args.ig_baseline == "blurred"
    ig_baselines = blurred_baselines(prepared) if use_blurred else None  # None: zeros
    for method in methods:
        options = {"integrated_gradients": {"steps": args.ig_steps, "baselines": ig_baselines},
                   "gradcam": {"level": args.gradcam_level or None}}.get(method, {})
        start = time.perf_counter()
        smooth_mm = default_smoothing(method) if args.smooth_mm is None else args.smooth_mm
        maps = working_saliency(model, tensors, method, 1, smooth_mm, spacings, **options)
        on_series = {s: to_series_grid(maps[s][0].numpy(), prepared[s].grid, series[s]) for s in names}
        seconds = time.perf_counter() - start
        pointing, deletion = {}, {}
        for s in names:
            if s in chance:
                mask = np.asarray(masks[s].array) > 0
                pointing[s] = pointing_game(on_series[s].array, mask, masks[s].spacing[::-1], args.margin_mm).hit
            image = prepared[s].tensor[0].numpy()
            order = deletion_order(maps[s][0].numpy(), rng)
            deletion[s] = deletion_curve(class_probability(model, tensors, s), image, baselines[s], order,
                                         args.steps).auc
        results[method] = {"seconds": seconds, "pointing": pointing, "deletion": deletion}
    with torch.no_grad():
        probability = float(torch.softmax(model(tensors), dim=1)[0, 1])
    return {"label": label, "probability": probability, "methods": results, "random_auc": random_auc,
            "chance": chance}


#: A map "beats random" on a case when its deletion AUC is lower than the random order's by at least this much.
BEAT_MARGIN = 0.005


def summarise(rows: list[dict], names: tuple[str, ...], methods: list[str]) -> list[str]:
    """The printed table: one line per method and branch."""
    lines = [f"{'method':<22}{'branch':<11}{'pointing (pos.)':>17}{'chance':>8}{'deletion AUC':>14}"
             f"{'random AUC':>12}{'beats random':>14}{'s/case':>8}"]
    for method in methods:
        seconds = np.mean([r["methods"][method]["seconds"] for r in rows])
        for s in names:
            hits = [r["methods"][method]["pointing"][s] for r in rows if s in r["methods"][method]["pointing"]]
            chance = [r["chance"][s] for r in rows if s in r["chance"]]
            auc = np.array([r["methods"][method]["deletion"][s] for r in rows])
            rand = np.array([r["random_auc"][s] for r in rows])
            point = f"{np.mean(hits):.2f} ({sum(hits)}/{len(hits)})" if hits else "n/a (0 cases)"
            beats = (auc < rand - BEAT_MARGIN).mean()
            lines.append(f"{method:<22}{s:<11}{point:>17}{(np.mean(chance) if chance else float('nan')):>8.2f}"
                         f"{auc.mean():>14.3f}{rand.mean():>12.3f}{beats:>14.2f}{seconds:>8.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint / model file, or a registry id")
    parser.add_argument("--n", type=int, default=20, help="number of test cases")
    parser.add_argument("--seed", type=int, default=100_000, help="first phantom seed (ignored with --manifest)")
    parser.add_argument("--manifest", default="", help="read cases from this cohort's test split instead")
    parser.add_argument("--methods", default="gradcam,integrated_gradients",
                        help="comma-separated: gradcam, integrated_gradients, occlusion")
    parser.add_argument("--margin-mm", type=float, default=None, help="pointing-game tolerance (default 10 mm)")
    parser.add_argument("--steps", type=int, default=20, help="deletion-curve steps")
    parser.add_argument("--ig-steps", type=int, default=16, help="integrated-gradients path points")
    parser.add_argument("--ig-baseline", choices=("blurred", "zero"), default="blurred",
                        help="integrated gradients' baseline: the input blurred (the default of cspineai.saliency) "
                             "or the zero image")
    parser.add_argument("--gradcam-level", type=int, default=0,
                        help="pyramid level (1-4) Grad-CAM weights (default 0: the last stage)")
    parser.add_argument("--blur-mm", type=float, default=8.0, help="sigma of the blurred deletion baseline (mm)")
    parser.add_argument("--smooth-mm", type=float, default=None,
                        help="Gaussian sigma (mm) smoothing every method's map (default: the pipeline's, "
                             "cspineai.saliency.default_smoothing: 8 mm for integrated gradients, none otherwise)")
    parser.add_argument("--resolution", default="default", help="phantom protocol preset (default, coarse)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default="", help="also write the per-case results here (atomically)")
    args = parser.parse_args(argv)

    import torch

    from cspineai.metrics.saliency import DEFAULT_MARGIN_MM
    from cspineai.saliency import METHODS

    torch.set_num_threads(args.threads)
    args.margin_mm = DEFAULT_MARGIN_MM if args.margin_mm is None else args.margin_mm
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        parser.error(f"--methods takes {', '.join(METHODS)}; got {args.methods!r}")
    model = load_classifier(args.model, args.device)
    names = tuple(model.series)
    cases = (manifest_cases(args.manifest, args.n, names) if args.manifest
             else synthetic_cases(args.n, args.seed, args.resolution))
    rng = np.random.default_rng(args.seed)
    rows = []
    for case_id, series, masks, label in cases:
        row = evaluate_case(model, series, masks, label, methods, args, rng)
        rows.append({"case": case_id, **row})
        print(f"{case_id}: label {label}, p(pain) {row['probability']:.2f}", flush=True)
    source = f"manifest {args.manifest} (test split)" if args.manifest else f"phantom seeds {args.seed}.."
    print(f"\nmachine: {machine_summary()}")
    print(f"model: {args.model}; series {', '.join(names)}; {len(rows)} cases from {source}, "
          f"{sum(r['label'] for r in rows)} positive")
    print(f"pointing game: margin {args.margin_mm:g} mm, positive cases with a causal region in the series; deletion: "
          f"{args.steps} steps, blurred baseline sigma {args.blur_mm:g} mm, AUC of p(pain) (lower is better); "
          f"Grad-CAM on {f'pyramid level {args.gradcam_level}' if args.gradcam_level else 'the last stage'}; "
          f"integrated gradients from the {args.ig_baseline} baseline; maps smoothed by "
          f"{'the pipeline default per method' if args.smooth_mm is None else f'{args.smooth_mm:g} mm'}\n")
    print("\n".join(summarise(rows, names, methods)))
    if args.json:
        from cspineai.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
