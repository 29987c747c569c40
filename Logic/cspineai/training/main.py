"""Entry points of ``Training/{train,evaluate,export}.py`` and of ``cspineai train|evaluate|export``.

Each ``*_main(argv)`` parses its arguments with ``parse_known_args`` (Slicer's ``--python-script`` may leave its own
flags in ``sys.argv``; they are reported and ignored), runs, prints a project error as one readable line and returns a
process exit status (0 success, 2 input/model error, 130 cancelled).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import signal
import sys
from pathlib import Path

from ..errors import CSpineCancelled, CSpineError, CSpineInputError

# --- argument parsers (shared with the cspineai CLI) -------------------------------------------------------------


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", required=True, help="YAML configuration (Training/configs/<task>.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration value, e.g. --set optim.lr=3e-4 --set data.fold=2 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint")
    parser.add_argument("--folds", choices=("one", "all"), default="one",
                        help="'all' trains every cross-validation fold into output_dir/fold_<k> and writes the "
                             "cross-validation report")
    return parser


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint (.pt) written by training")
    source.add_argument("--model", help="model id in the registry (shipped or user-registered)")
    source.add_argument("--cv", metavar="RUN_DIR", help="cross-validation report over RUN_DIR/fold_*/metrics.json")
    parser.add_argument("--manifest", help="cases to score (default: the manifest the model was trained on)")
    cases = parser.add_mutually_exclusive_group()
    cases.add_argument("--split", choices=("test", "all"), default="test",
                       help="'test': cases with split=test (all cases when none is marked); 'all': every case")
    cases.add_argument("--fold", type=int, help="validation fold N of the manifest, as training splits it (the "
                                                "model's data.folds and seed): compare models on the cases a run "
                                                "validated on, without touching the test split")
    parser.add_argument("--output", help="folder for evaluation.json and predictions.csv (written atomically)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    return parser


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--list", action="store_true", help="list the registered models and exit")
    parser.add_argument("--checkpoint", help="checkpoint to export (usually <run>/checkpoints/best.pt)")
    parser.add_argument("--id", dest="model_id", help="model id, e.g. pain-t1sag-ctbone-site")
    parser.add_argument("--version", default="1.0.0", help="model version (default 1.0.0)")
    parser.add_argument("--registry", help="registry folder (default: $CSPINEAI_USER_MODELS or ~/.cspineai/models)")
    parser.add_argument("--description", default="", help="one paragraph for the model card")
    parser.add_argument("--training-data", default="", help="what the model was trained on (no patient identifiers)")
    parser.add_argument("--training-command", default="", help="the command that trained it")
    parser.add_argument("--overwrite", action="store_true", help="replace an entry with the same id and version")
    parser.add_argument("--average-with", nargs="+", default=[], metavar="MODEL",
                        help="register the uniform average of the checkpoint's weights and these models' (checkpoints "
                             "or registered ids such as cordseg-unet@1.2.0; same task and network): a 'model soup' of "
                             "a fine-tuned model and the model it started from")
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # Slicer's launcher may pass its own flags through to the script; they are not ours to interpret.
        print(f"note: ignoring arguments not meant for {parser.prog}: {' '.join(unknown)}", file=sys.stderr)
    return args


def _guard(run, args) -> int:
    try:
        return int(run(args) or 0)
    except CSpineCancelled:
        print("cancelled", file=sys.stderr)
        return 130
    except CSpineError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2


# --- train -------------------------------------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> int:
    from ..progress import CancelToken
    from .config import load_config
    from .data import fold_ids, load_cases
    from .distributed import barrier, cleanup, init_distributed
    from .loop import fit
    from .tasks import get_task

    config = load_config(args.config, args.overrides, resume=args.resume)
    info = init_distributed(config["device"])
    cancel = CancelToken()
    # SIGTERM (Slicer's process runner cancelling, a cluster's pre-emption) ends the run between steps or validation
    # batches; the last trained epoch's checkpoint stays valid for --resume.
    previous = signal.signal(signal.SIGTERM, lambda *_: cancel.cancel())
    try:
        if args.folds == "one":
            result = fit(config, info, resume=args.resume, cancel=cancel)
            if info.is_main:
                print(f"done: {_summary(result)}; outputs in {config['output_dir']}", flush=True)
        else:
            task = get_task(config["task"])
            cases = load_cases(config["manifest"], tuple(task.required_columns))
            root = Path(config["output_dir"])
            for fold in fold_ids(cases, config["data"]["folds"], config["seed"], task.stratify_by):
                fold_config = {**config, "output_dir": str(root / f"fold_{fold}"),
                               "data": {**config["data"], "fold": fold}}
                resume_fold = args.resume and (root / f"fold_{fold}" / "checkpoints" / "last.pt").exists()
                if resume_fold and (root / f"fold_{fold}" / "metrics.json").exists():
                    continue  # finished before the interruption
                fit(fold_config, info, resume=resume_fold, cancel=cancel)
            if info.is_main:
                print(write_cv_report(root)[0], flush=True)
        # Every rank tears the process group down together: a gloo rank whose peer destroys the group while it is
        # still finishing can abort at exit ("terminate called without an active exception"). Not in the finally:
        # after a failure the peers may never arrive.
        barrier(info)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        cleanup(info)


def _summary(result: dict) -> str:
    best = result.get("best_value")
    text = f"{result['epochs_completed']} epoch(s)"
    if best is not None:
        text += f", best val {result['monitor']} {best:.4g} at epoch {result['best_epoch']}"
    return text


def train_main(argv: list[str] | None = None) -> int:
    """train a model from a YAML configuration (one process, or one per GPU under torchrun)"""
    parser = add_train_arguments(argparse.ArgumentParser(
        prog="train", description="Train a CSpineAI model (single process, or under torchrun for several GPUs)."))
    return _guard(run_train, _parse(parser, argv))


# --- evaluate ------------------------------------------------------------------------------------------------------


def run_evaluate(args: argparse.Namespace) -> int:
    if args.cv:
        print(write_cv_report(Path(args.cv))[0])
        return 0

    from ..atomic import atomic_write_text
    from . import data as data_mod
    from .checkpoint import fitted_figures, load_checkpoint, model_weights
    from .config import resolve_config
    from .distributed import pick_device
    from .logging import write_json
    from .loop import run_validation
    from .tasks import get_task

    if args.model:
        from ..models.registry import find_model, load_model_state

        entry = find_model(args.model)
        state, source = load_model_state(entry), f"model {entry.id} {entry.version}"
    else:
        state, source = load_checkpoint(args.checkpoint), str(args.checkpoint)
    config = resolve_config(dict(state["config"]), source)
    if args.manifest:
        config["manifest"] = str(Path(args.manifest).resolve())
    task = get_task(config["task"])
    cases = data_mod.load_cases(config["manifest"], tuple(task.required_columns))
    if args.fold is not None:
        cases = data_mod.split_cases(cases, args.fold, config["data"]["folds"], config["seed"], task.stratify_by)[1]
    elif args.split == "test" and any(c.split == "test" for c in cases):
        cases = [c for c in cases if c.split == "test"]
    device = pick_device(args.device)
    model = task.build_model(config)
    model.load_state_dict(model_weights(state))
    model.to(device)
    dataset = data_mod.make_dataset(task.data_items(cases, config), task.transforms(config, False))
    loader = data_mod.make_loader(dataset, config["data"]["val_batch_size"] or config["data"]["batch_size"], False,
                                  config["seed"], 0, 0, task.collate())
    figures, outputs = run_validation(task, model, loader, config, device, fitted=fitted_figures(state))
    figures = {"n_cases": len(cases), **figures,
               **{f"reference_{k}": v for k, v in task.reference_figures(cases).items()}}
    for key, value in figures.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    if args.output:
        out = Path(args.output)
        write_json(out / "evaluation.json", {"source": Path(source).name if not args.model else source,
                                             "task": task.name, "figures": figures})
        rows = task.case_rows(outputs, config)
        if rows:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(out / "predictions.csv", buffer.getvalue())
    return 0


def evaluate_main(argv: list[str] | None = None) -> int:
    """score a checkpoint or registered model on a manifest, or summarise cross-validation folds"""
    parser = add_evaluate_arguments(argparse.ArgumentParser(
        prog="evaluate", description="Score a model on a manifest, or report cross-validation."))
    return _guard(run_evaluate, _parse(parser, argv))


# --- cross-validation report -------------------------------------------------------------------------------------


def cv_table(run_dirs: list[Path]) -> tuple[list[str], list[dict]]:
    """Columns and one row per fold: the validation figures of each fold's best epoch (``metrics.json``)."""
    rows = []
    for run in run_dirs:
        file = run / "metrics.json"
        if not file.is_file():
            raise CSpineInputError(run, "has no metrics.json (the fold's training did not finish)")
        result = json.loads(file.read_text(encoding="utf-8"))
        figures = {k[4:]: v for k, v in (result.get("best") or {}).items() if k.startswith("val_")}
        rows.append({"fold": result.get("fold", run.name), "n_val": result.get("n_val"), **figures})
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns and k not in ("fold", "n_val")]
    return columns, rows


def _mean_sd(values: list) -> tuple[float, float]:
    finite = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    mean = sum(finite) / len(finite)
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else 0.0
    return mean, sd


def write_cv_report(root: Path) -> tuple[str, Path, Path]:
    """Mean ± SD (sample SD over folds) of every validation figure; writes ``cv_report.md`` and ``cv_report.csv``."""
    from ..atomic import atomic_write_text

    root = Path(root)
    runs = sorted(p for p in root.glob("fold_*") if p.is_dir())
    if not runs:
        raise CSpineInputError(root, "holds no fold_<k> run folders")
    columns, rows = cv_table(runs)
    cases = sum(int(r["n_val"] or 0) for r in rows)
    stats = {c: _mean_sd([r.get(c) for r in rows]) for c in columns}

    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))

    title = f"Cross-validation: {len(rows)} folds, {cases} validation cases in all (figures of each fold's best epoch)"
    lines = [title,
             "", "| fold | n | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    lines += ["| " + " | ".join([cell(r["fold"]), cell(r["n_val"])] + [cell(r.get(c)) for c in columns]) + " |"
              for r in rows]
    lines.append("| mean ± SD | " + str(cases) + " | "
                 + " | ".join(f"{stats[c][0]:.3f} ± {stats[c][1]:.3f}" for c in columns) + " |")
    markdown = "\n".join(lines) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["fold", "n_val", *columns])
    for r in rows:
        writer.writerow([r["fold"], r["n_val"], *(r.get(c, "") for c in columns)])
    writer.writerow(["mean", cases, *(stats[c][0] for c in columns)])
    writer.writerow(["sd", "", *(stats[c][1] for c in columns)])
    md_path = atomic_write_text(root / "cv_report.md", markdown)
    csv_path = atomic_write_text(root / "cv_report.csv", buffer.getvalue())
    return markdown, md_path, csv_path


# --- export --------------------------------------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    from ..models.registry import export_model, list_models

    if args.list:
        entries = list_models(args.registry)
        if not entries:
            print("no models registered")
        for e in entries:
            print(f"{e.id} {e.version} [{e.source}] task={e.task} inputs={','.join(e.inputs)} file={e.path}")
        return 0
    if not args.checkpoint or not args.model_id:
        raise CSpineInputError("export", "--checkpoint and --id are required (or use --list)")
    entry = export_model(args.checkpoint, args.model_id, args.version, registry_dir=args.registry,
                         description=args.description, training_data=args.training_data,
                         training_command=args.training_command, overwrite=args.overwrite,
                         average_with=args.average_with)
    print(f"registered {entry.id} {entry.version}: {entry.path} (sha256 {entry.sha256[:12]}...), card {entry.card}")
    return 0


def export_main(argv: list[str] | None = None) -> int:
    """turn a training checkpoint into a registered model with a model card, or list registered models"""
    parser = add_export_arguments(argparse.ArgumentParser(
        prog="export", description="Turn a checkpoint into a registry entry with a model card, or list models."))
    return _guard(run_export, _parse(parser, argv))
