"""``cspineai predict``: postoperative neck-pain probability for every case of a manifest, written as one CSV.

    cspineai predict --manifest cohort/manifest.csv --out preds.csv                 # the shipped default model
    cspineai predict --manifest M --model pain-abpdc-t1sag-ctbone --split test --out preds.csv
    cspineai predict --manifest M --checkpoint runs/pain/checkpoints/best.pt --out preds.csv

Columns: ``case_id``, ``probability`` (P(pain), 6 decimals), ``predicted`` (1 when the probability reaches the model's
threshold), ``threshold`` (chosen on the model's validation data, never on the cases scored here) and ``label`` when
the manifest has one. The CSV is written atomically, after every case has been predicted: a case missing one of the
model's series, or with a 2-D or unusable one, stops the command with a message naming the case and the series and
leaves no partial output.
"""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="postoperative neck-pain probability per case of a manifest (CSV)",
        description="Predict postoperative neck pain for each case of a manifest with a registered two-branch model "
        "(or a training checkpoint) and write case_id, probability, predicted label and threshold as CSV.",
    )
    parser.add_argument("--manifest", required=True, help="cohort manifest (cspineai.manifest format)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="registered model id (default: the shipped neck-pain classifier)")
    source.add_argument("--checkpoint", help="training checkpoint (.pt) of the pain task instead of a model id")
    parser.add_argument("--split", choices=("all", "test", "train"), default="all",
                        help="which cases to score (manifest 'split' column; default: all)")
    parser.add_argument("--out", default="predictions.csv", help="output CSV (default: ./predictions.csv)")
    # One thread by default: measured on a 2-core machine shared with other jobs, one case took 0.6 s with one torch
    # thread and 4.5 s with two (OpenMP threads waiting for each other). On an idle machine, try --threads 2.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0: torch's default)")
    parser.set_defaults(func=run)


def load_pain_model(model_id: str | None = None, checkpoint: str | None = None):
    """``(model in eval mode on the CPU, threshold, description)`` from the registry or a training checkpoint.

    The threshold is the one chosen on the model's validation data (0.5 when it has none).
    """
    from ..errors import CSpineInputError

    if checkpoint:
        from ..training.checkpoint import fitted_figures, load_checkpoint, model_weights
        from ..training.config import resolve_config
        from ..training.tasks import get_task

        state = load_checkpoint(checkpoint)
        config = resolve_config(dict(state["config"]), str(checkpoint))
        description = f"checkpoint {checkpoint}"
        if config.get("task") != "pain":
            raise CSpineInputError(description, f"is a {config.get('task')!r} model, not a neck-pain classifier")
        model = get_task(config["task"]).build_model(config)
        model.load_state_dict(model_weights(state))
        threshold = fitted_figures(state).get("threshold")
    else:
        # The pipeline's loader is the one definition of a registered classifier and its operating threshold.
        from ..pipeline import load_registry_model
        from ..prediction import DEFAULT_MODEL_ID

        loaded = load_registry_model("classifier", model_id or DEFAULT_MODEL_ID)
        model, threshold, description = loaded.module, loaded.threshold, f"model {loaded.id} {loaded.version}"
    return model.eval(), float(0.5 if threshold is None else threshold), description


def predict_cases(cases, model, threshold: float) -> list[dict]:
    """One row per case (see the module docstring); raises :class:`CSpineInputError` naming the case and series."""
    from ..errors import CSpineInputError
    from ..io import read_volume
    from ..prediction import predict_pain

    # Check that every case lists every series before reading any image: a long run does not fail at its last case.
    for case in cases:
        for name in model.series:
            if name not in case.paths:
                raise CSpineInputError(f"case {case.case_id}, {name} series",
                                       "is required by this model but the manifest gives no file for it")
    rows = []
    for case in cases:
        series = {}
        for name in model.series:
            try:
                series[name] = read_volume(case.paths[name], modality=name)
            except CSpineInputError as error:
                raise CSpineInputError(f"case {case.case_id}, {name} series ({error.source})", error.problem) from None
        try:
            result = predict_pain(series, model)
        except CSpineInputError as error:
            raise CSpineInputError(f"case {case.case_id}, {error.source}", error.problem) from None
        row = {"case_id": case.case_id, "probability": f"{result.probability:.6f}",
               "predicted": int(result.probability >= threshold), "threshold": f"{threshold:.6f}"}
        if case.label is not None:
            row["label"] = int(case.label)
        rows.append(row)
    return rows


def write_predictions(rows: list[dict], path) -> object:
    """Write the rows as CSV atomically; returns the path."""
    import csv
    import io

    from ..atomic import atomic_write_text

    columns = ["case_id", "probability", "predicted", "threshold"]
    if any("label" in row for row in rows):
        columns.append("label")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def run(args) -> int:
    import time

    import torch

    from ..errors import CSpineInputError
    from ..manifest import read_manifest

    if args.threads:
        torch.set_num_threads(args.threads)
    cases = read_manifest(args.manifest, check_files=False)
    if args.split != "all":
        cases = [c for c in cases if (c.split or "train") == args.split]
    if not cases:
        raise CSpineInputError(args.manifest, f"lists no case in split {args.split!r}")
    model, threshold, description = load_pain_model(args.model, args.checkpoint)
    start = time.perf_counter()
    rows = predict_cases(cases, model, threshold)
    elapsed = time.perf_counter() - start
    path = write_predictions(rows, args.out)
    positives = sum(r["predicted"] for r in rows)
    print(f"{description}: {len(rows)} case(s), {positives} predicted pain at threshold {threshold:.3f}; "
          f"{elapsed / len(rows):.2f} s per case; wrote {path}")
    return 0
