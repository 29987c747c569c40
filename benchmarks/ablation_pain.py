"""Structure of paper 000's Table 1 and Table 2 on the synthetic cohort: neck-pain classifiers, five folds.

    python benchmarks/ablation_pain.py                                  # everything, the CPU protocol (long)
    python benchmarks/ablation_pain.py --protocol reduced --pairs T1_sag+CT_bone --models conv,cdc,abpdc --folds 0,1
    python benchmarks/ablation_pain.py --report-only                    # rewrite the Markdown from finished runs

Table 1: for each of the six modality pairs (methods.md section 2), the two-branch pyramid classifier with plain
convolution (``conv``), CDC (fixed theta = 0.7, full support) and ABPDC (adaptive theta, pyramid support); "+ FPRAN"
rows come when the registration issue lands. Table 2: the four MONAI baselines (ResNet, ViT, EfficientNet, DenseNet)
for the paper's two pairs (T1_sag + T2_tra, T1_sag + CT_bone).

Protocol of every run (one configuration, one fold k): train on the training cases outside fold k, validate on fold k
(early stopping, best epoch and the Youden threshold are chosen there), then score the cohort's held-out test cases
(``split = test``, never seen in training or model selection) with that threshold. Per configuration the table gives
accuracy, F1 and AUC on the test cases as mean ± SD over the folds that ran, the DeLong 95% CI of the AUC of the fold
models' averaged probabilities, and the validation AUC. Beside the numbers: the cohort's Bayes-optimal accuracy
(each case's true pain probability known: mean of max(p, 1 - p)) and an image-findings oracle (the rule's image terms
read exactly, clinical covariates unknown), the ceilings any image classifier works under.

Resumable: a run whose ``test_scores.json`` exists is skipped; one with a ``last.pt`` but no result is resumed
(``--resume`` of the engine: bitwise the same as an uninterrupted run on the CPU). Runs are independent folders, so
several drivers with disjoint ``--models``/``--pairs`` can run at once; each rewrites the Markdown from every finished
run (atomically). The Markdown printed on stdout is the file written.

Protocols (``--protocol``): ``paper`` = ``Training/configs/pain.yaml`` (the paper's defaults, for a GPU);
``cpu`` = ``Training/configs/pain_cpu.yaml`` (the shipped model's protocol); ``reduced`` = the CPU protocol on smaller
working sizes (sagittal 16 x 64 x 64, axial 16 x 48 x 48: same fields of view, coarser spacing) with ``--epochs``
(default 12) epochs. ``--epochs``, ``--sagittal-size``, ``--axial-size`` override any protocol and the Markdown says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

from cspineai.environment import cpu_name

REPO = Path(__file__).resolve().parents[1]
try:
    import cspineai  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "Logic"))

VARIANT_MODELS = ("conv", "cdc", "abpdc")
BASELINE_MODELS = ("resnet", "vit", "efficientnet", "densenet")
#: The pairs of the paper's Table 2 (sagittal, axial).
BASELINE_PAIRS = (("T1_sag", "T2_tra"), ("T1_sag", "CT_bone"))
MODEL_LABELS = {"conv": "plain conv", "cdc": "CDC (θ=0.7)", "pdc": "PDC (θ=0.7)", "acdc": "ACDC", "abpdc": "ABPDC",
                "resnet": "ResNet-10 (MONAI)", "vit": "ViT (MONAI patch embedding)",
                "efficientnet": "EfficientNet-B0 (MONAI)", "densenet": "DenseNet (MONAI)"}
PROTOCOLS = {
    "paper": ("pain.yaml", {}),
    "cpu": ("pain_cpu.yaml", {}),
    "reduced": ("pain_cpu.yaml", {"task_options.sagittal_size": [16, 64, 64], "task_options.axial_size": [16, 48, 48],
                                  "optim.epochs": 12, "early_stopping.patience": 0}),
}


# --- cohort references -------------------------------------------------------------------------------------------


def cohort_reference(cases) -> dict:
    """Ceilings of the synthetic cohort from each case's ``clinical.json`` (absent: an empty dict).

    ``bayes_all`` / ``bayes_test``: mean of max(p, 1 - p) over all / test cases, p = the case's true pain probability
    (the accuracy of a classifier that knows every input of the outcome rule). ``oracle_*``: the rule's image terms
    (extensor fat, facets, Modic, cord compression, T2 signal, OPLL) read exactly and summed as the rule sums them,
    clinical covariates unknown; AUC on the test cases, accuracy there at the Youden threshold chosen on the training
    cases.
    """
    import numpy as np

    from cspineai.metrics.classification import binary_report, youden_threshold
    from cspineai.phantom import outcome

    rows = []
    for case in cases:
        file = case.paths.get("clinical")
        if file is None or not Path(file).is_file():
            return {}
        clinical = json.loads(Path(file).read_text(encoding="utf-8"))
        terms = outcome.rule_terms(clinical["findings"], clinical)
        image = sum(terms[k] for k in ("extensor_fat", "facet", "modic", "compression", "t2_hyperintensity", "opll"))
        rows.append((case.split == "test", int(case.label), float(clinical["pain_probability"]), image))
    test = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    p = np.array([r[2] for r in rows])
    image = np.array([r[3] for r in rows])
    best = np.maximum(p, 1.0 - p)
    out = {"n": len(rows), "n_test": int(test.sum()), "prevalence": float(y.mean()),
           "bayes_all": float(best.mean()), "bayes_test": float(best[test].mean()) if test.any() else math.nan}
    if test.any() and (~test).any() and 0 < y[test].sum() < test.sum():
        threshold = youden_threshold(y[~test], image[~test])
        report = binary_report(y[test], image[test], threshold)
        out.update(oracle_accuracy=report["accuracy"], oracle_auc=report["auc"], oracle_auc_low=report["auc_low"],
                   oracle_auc_high=report["auc_high"])
        # The Bayes rule's own AUC on the test labels (p known exactly): the AUC ceiling.
        out["bayes_auc_test"] = binary_report(y[test], p[test], 0.5)["auc"]
    return out


# --- one run -------------------------------------------------------------------------------------------------------


def run_name(pair: tuple[str, str], model: str) -> str:
    return f"{pair[0]}+{pair[1]}/{model}"


def run_config(args, pair: tuple[str, str], model: str, fold: int, out: Path) -> dict:
    from cspineai.training.config import load_config

    config_file, protocol = PROTOCOLS[args.protocol]
    overrides = {**protocol, **protocol_overrides(args)}
    sets = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    sets += [f"manifest={Path(args.manifest).resolve()}", f"output_dir={out}", f"data.fold={fold}",
             f"task_options.series={json.dumps(list(pair))}", "data.cache=disk",
             f"data.cache_dir={Path(args.out).resolve() / 'cache'}", "log.tensorboard=false"]
    if model in VARIANT_MODELS or model in ("pdc", "acdc"):
        sets += ["model.backbone=abpdc", f"model.variant={model}"]
    else:
        sets += [f"model.backbone={model}"]
    return load_config(REPO / "Training" / "configs" / config_file, sets)


def protocol_overrides(args) -> dict:
    overrides = {}
    if args.epochs:
        overrides["optim.epochs"] = args.epochs
    if args.sagittal_size:
        overrides["task_options.sagittal_size"] = args.sagittal_size
    if args.axial_size:
        overrides["task_options.axial_size"] = args.axial_size
    return overrides


def score_test_cases(config: dict, checkpoint: Path, test_cases) -> dict:
    """Probabilities of the test cases under ``checkpoint`` and the figures at its validation threshold."""
    import numpy as np
    import torch

    from cspineai.tasks.pain import score_figures
    from cspineai.training.checkpoint import fitted_figures, load_checkpoint, model_weights
    from cspineai.training.data import make_dataset
    from cspineai.training.tasks import get_task

    task = get_task("pain")
    state = load_checkpoint(checkpoint)
    model = task.build_model(config)
    model.load_state_dict(model_weights(state))
    model.eval()
    fitted = fitted_figures(state)
    dataset = make_dataset(task.data_items(test_cases, config), task.transforms(config, False),
                           config["data"]["cache"], config["data"]["cache_dir"])
    names = list(model.series)
    scores, labels, ids = [], [], []
    with torch.no_grad():
        for n in range(0, len(dataset), 8):
            items = [dataset[i] for i in range(n, min(n + 8, len(dataset)))]
            batch = {name: torch.stack([torch.as_tensor(item[name]) for item in items]).float() for name in names}
            logits = model(batch)
            scores += torch.softmax(logits.double(), dim=1)[:, 1].tolist()
            labels += [int(item["label"]) for item in items]
            ids += [item["case_id"] for item in items]
    figures = score_figures(np.array(labels), np.array(scores), fitted)
    validation = {k: v for k, v in fitted.items() if isinstance(v, int | float)}
    return {"case_id": ids, "label": labels, "score": scores, "figures": figures, "val": validation,
            "epoch": int(state.get("epoch") or 0)}


def run_one(args, pair, model, fold, cases_test) -> dict | None:
    """Train (or resume) one configuration on one fold and score the test cases; ``None`` when it is not done."""
    from cspineai.atomic import atomic_write_text
    from cspineai.training.distributed import DistInfo
    from cspineai.training.loop import fit

    out = Path(args.out) / run_name(pair, model) / f"fold_{fold}"
    result_file = out / "test_scores.json"
    if result_file.is_file():
        return json.loads(result_file.read_text(encoding="utf-8"))
    if args.report_only:
        return None
    config = run_config(args, pair, model, fold, out)
    resume = (out / "checkpoints" / "last.pt").is_file() and not (out / "metrics.json").is_file()
    start = time.perf_counter()
    if not (out / "metrics.json").is_file():
        print(f"[ablation] {run_name(pair, model)} fold {fold}: training{' (resumed)' if resume else ''}",
              file=sys.stderr, flush=True)
        fit(config, DistInfo(), resume=resume)
    result = score_test_cases(config, out / "checkpoints" / "best.pt", cases_test)
    result["train_seconds"] = round(time.perf_counter() - start, 1)
    result["command"] = args.command
    result["protocol"] = {"name": args.protocol, "epochs": config["optim"]["epochs"],
                          "sagittal_size": config["task_options"]["sagittal_size"],
                          "axial_size": config["task_options"]["axial_size"], "widths": config["model"]["widths"]}
    atomic_write_text(result_file, json.dumps(result, indent=1) + "\n")
    figures = result["figures"]
    print(f"[ablation] {run_name(pair, model)} fold {fold}: test accuracy {figures['accuracy']:.3f} "
          f"AUC {figures['auc']:.3f} ({result['train_seconds']:.0f} s)", file=sys.stderr, flush=True)
    return result


# --- the report ------------------------------------------------------------------------------------------------------


def _mean_sd(values) -> str:
    values = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not values:
        return "–"
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def summarise(results: list[dict]) -> dict:
    """Mean ± SD over folds of the test figures, DeLong CI of the fold-averaged probabilities, validation AUC."""
    import numpy as np

    from cspineai.metrics.classification import auc_delong_ci

    if not results:
        return {}
    ids = results[0]["case_id"]
    labels = np.array(results[0]["label"])
    mean_score = np.mean([[dict(zip(r["case_id"], r["score"], strict=True))[c] for c in ids] for r in results], axis=0)
    from cspineai.errors import CSpineInputError

    try:
        auc, low, high = auc_delong_ci(labels, mean_score)
    except CSpineInputError:  # DeLong needs two cases of each class (a tiny smoke-test cohort has fewer)
        auc, low, high = (math.nan,) * 3
    return {
        "folds": len(results),
        "accuracy": _mean_sd([r["figures"]["accuracy"] for r in results]),
        "f1": _mean_sd([r["figures"]["f1"] for r in results]),
        "auc": _mean_sd([r["figures"]["auc"] for r in results]),
        "auc_ci": f"{auc:.3f} [{low:.3f}, {high:.3f}]",
        "val_auc": _mean_sd([r["val"].get("auc", math.nan) for r in results]),
        "auc_mean": float(np.mean([r["figures"]["auc"] for r in results])),
    }


def _row(label: str, summary: dict) -> str:
    if not summary:
        return f"| {label} | not run | | | | | |"
    return (f"| {label} | {summary['folds']} | {summary['accuracy']} | {summary['f1']} | {summary['auc']} | "
            f"{summary['auc_ci']} | {summary['val_auc']} |")


def render(args, command: str, cases, reference: dict, table: dict, protocols: list[dict]) -> str:
    import torch

    n_test = sum(c.split == "test" for c in cases)
    n_train = len(cases) - n_test
    folds = sorted({c.fold for c in cases if c.split != "test" and c.fold is not None})
    lines = ["# Neck-pain classifier ablation on the synthetic cohort (structure of paper 000, Tables 1 and 2)", "",
             f"Command: `{command}`", "",
             f"- Cohort: `{args.manifest}`: {len(cases)} cases, {n_train} for training/validation in {len(folds)} "
             f"folds, {n_test} held-out test cases (`split = test`).",
             f"- Machine: {cpu_name()}, {os.cpu_count()} CPU core(s) shared with other jobs (load average "
             f"{os.getloadavg()[0]:.1f} when this report was written), torch {torch.__version__}, "
             f"{torch.get_num_threads()} torch thread(s) per run; no GPU. Times are indicative only."]
    if reference:
        ref = {k: reference.get(k, math.nan) for k in ("bayes_auc_test", "oracle_accuracy", "oracle_auc",
                                                          "oracle_auc_low", "oracle_auc_high")}
        lines.append(f"- Ceilings: Bayes-optimal accuracy {reference['bayes_test']:.3f} on the test cases "
                     f"({reference['bayes_all']:.3f} on all {reference['n']} cases; true pain probability known, "
                     f"AUC {ref['bayes_auc_test']:.3f} on the test cases). Image-findings oracle "
                     "(the rule's image terms read exactly, clinical covariates unknown): accuracy "
                     f"{ref['oracle_accuracy']:.3f}, AUC {ref['oracle_auc']:.3f} "
                     f"[{ref['oracle_auc_low']:.3f}, {ref['oracle_auc_high']:.3f}]"
                     f" on the test cases. Prevalence of pain {reference['prevalence']:.3f}.")
    commands = sorted({p.get("command", "not recorded") for p in protocols})
    lines += [f"- Runs below produced by: {'; '.join(f'`{c}`' for c in commands) or 'none yet'}."]
    protocols = [{k: v for k, v in p.items() if k != "command"} for p in protocols]
    seen = {json.dumps(p, sort_keys=True) for p in protocols}
    described = "; ".join(
        f"{p['name']}: {p['epochs']} epochs max, sagittal {'x'.join(map(str, p['sagittal_size']))}, axial "
        f"{'x'.join(map(str, p['axial_size']))}, widths {p['widths']}" for p in map(json.loads, sorted(seen)))
    lines += [f"- Protocol of the runs below: {described or 'none finished'} (see the driver's docstring; "
              "`reduced` and epoch caps are below the paper's 100 epochs at full size, so these are not the paper's "
              "protocol).",
              "- Each cell: test-case figures of the fold models, mean ± SD over the folds that ran (threshold: "
              "Youden on that fold's validation cases); AUC 95% CI: DeLong, on the fold models' averaged "
              "probabilities; last column: validation AUC (best epoch, fold's own validation cases).", ""]
    header = ["| model | folds | accuracy | F1 | AUC | AUC 95% CI (DeLong) | val AUC |",
              "|---|---|---|---|---|---|---|"]
    lines += ["## Table 1: modality pairs × convolution variants", ""]
    for pair in table["pairs"]:
        lines += [f"### {pair[0]} + {pair[1]}", "", *header]
        for model in table["variants"]:
            lines.append(_row(MODEL_LABELS.get(model, model), table["summaries"].get(run_name(pair, model), {})))
        lines.append("| + FPRAN | not available yet (registration issue) | | | | | |")
        lines.append("")
    lines += ["## Table 2: MONAI baselines in the same two-branch frame", ""]
    for pair in BASELINE_PAIRS:
        lines += [f"### {pair[0]} + {pair[1]}", "", *header]
        for model in (*BASELINE_MODELS, "abpdc"):
            lines.append(_row(MODEL_LABELS.get(model, model), table["summaries"].get(run_name(pair, model), {})))
        lines.append("")
    lines += ["## ABPDC against CDC", ""]
    verdicts = []
    for pair in table["pairs"]:
        a = table["summaries"].get(run_name(pair, "abpdc"))
        c = table["summaries"].get(run_name(pair, "cdc"))
        if a and c:
            verdict = "beats" if a["auc_mean"] > c["auc_mean"] else "does not beat"
            verdicts.append(f"- {pair[0]} + {pair[1]}: ABPDC {verdict} CDC here on mean test AUC "
                            f"({a['auc']} vs {c['auc']}, {a['folds']} and {c['folds']} fold(s)).")
    lines += verdicts or ["- No pair has both an ABPDC and a CDC result yet."]
    lines.append("")
    return "\n".join(lines)


def parse_pairs(text: str):
    from cspineai.nn.classifier import PAPER_PAIRS

    if text == "all":
        return list(PAPER_PAIRS)
    pairs = []
    for item in text.split(","):
        sagittal, _, axial = item.partition("+")
        pairs.append((sagittal.strip(), axial.strip()))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=str(REPO / "data" / "cohort250" / "manifest.csv"))
    parser.add_argument("--out", default=str(REPO / "runs" / "ablation-pain"), help="run folders and the disk cache")
    parser.add_argument("--markdown", default=str(REPO / "docs" / "results" / "pain_ablation.md"))
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="cpu")
    parser.add_argument("--pairs", default="all", help="'all' or e.g. T1_sag+CT_bone,T2_sag+T2_tra")
    parser.add_argument("--models", default=",".join(VARIANT_MODELS + BASELINE_MODELS),
                        help="variants (conv, cdc, pdc, acdc, abpdc) and baselines; baselines run on the paper's two "
                             "Table 2 pairs only")
    parser.add_argument("--folds", default="all", help="'all' or e.g. 0,1")
    parser.add_argument("--epochs", type=int, default=0, help="override the protocol's epochs")
    parser.add_argument("--sagittal-size", type=int, nargs=3, metavar=("D", "H", "W"))
    parser.add_argument("--axial-size", type=int, nargs=3, metavar=("D", "H", "W"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1: see pain_cpu.yaml)")
    parser.add_argument("--report-only", action="store_true", help="run nothing; rewrite the Markdown")
    args = parser.parse_args(argv)

    import torch

    from cspineai.atomic import atomic_write_text
    from cspineai.manifest import read_manifest

    torch.set_num_threads(args.threads)
    command = "python benchmarks/ablation_pain.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    args.command = command
    cases = read_manifest(args.manifest, require=("label",))
    test_cases = [c for c in cases if c.split == "test"]
    if not test_cases:
        from cspineai.errors import CSpineInputError

        raise CSpineInputError(args.manifest, "has no test cases (split = test); the ablation scores those")
    folds = sorted({c.fold for c in cases if c.split != "test" and c.fold is not None})
    if args.folds != "all":
        folds = [int(f) for f in args.folds.split(",")]
    pairs = parse_pairs(args.pairs)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    variants = [m for m in models if m not in BASELINE_MODELS]
    jobs = [(pair, model) for pair in pairs for model in variants]
    jobs += [(pair, model) for pair in pairs if pair in BASELINE_PAIRS for model in models if model in BASELINE_MODELS]
    for pair, model in jobs:
        for fold in folds:
            run_one(args, pair, model, fold, test_cases)

    # The report covers every finished run under --out (other drivers' too), whatever this invocation ran.
    table = {"pairs": parse_pairs("all"), "variants": [m for m in (*VARIANT_MODELS, "pdc", "acdc")
                                                       if m in VARIANT_MODELS or m in variants], "summaries": {}}
    protocols = []
    for folder in sorted(Path(args.out).glob("*+*/*")):
        results = [json.loads(f.read_text(encoding="utf-8")) for f in sorted(folder.glob("fold_*/test_scores.json"))]
        if results:
            table["summaries"][f"{folder.parent.name}/{folder.name}"] = summarise(results)
            protocols += [{**r["protocol"], "command": r.get("command", "not recorded")} for r in results]
    markdown = render(args, command, cases, cohort_reference(cases), table, protocols)
    atomic_write_text(args.markdown, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
