"""Structure of paper 000's Table 1 and Table 2 on the synthetic cohort: neck-pain classifiers, five folds.

    python benchmarks/ablation_pain.py                                  # everything, the CPU protocol (long)
    python benchmarks/ablation_pain.py --protocol reduced --pairs T1_sag+CT_bone --models conv,cdc,abpdc --folds 0,1
    python benchmarks/ablation_pain.py --report-only                    # rewrite the Markdown from finished runs
    python benchmarks/ablation_pain.py --models abpdc --aux-findings 0.5  # ABPDC with the auxiliary findings loss

Table 1: for each of the six modality pairs (methods.md section 2), the two-branch pyramid classifier with plain
convolution (``conv``), CDC (fixed theta = 0.7, full support) and ABPDC (adaptive theta, pyramid support); "+ FPRAN"
rows (``--fpran W``) train the model jointly with FPRAN, L = L_class + W L_sim + L_reg. Table 2: the four MONAI
baselines (ResNet, ViT, EfficientNet, DenseNet) for the paper's two pairs (T1_sag + T2_tra, T1_sag + CT_bone).

Protocol of every run (one configuration, one fold k): train on the training cases outside fold k, validate on fold k
(early stopping, best epoch and the Youden threshold are chosen there), then score the cohort's held-out test cases
(``split = test``, never seen in training or model selection) with that threshold. Per configuration the table gives
accuracy, F1 and AUC on the test cases as mean ± SD over the folds that ran, the DeLong 95% CI of the AUC of the fold
models' averaged probabilities, and the validation AUC. Beside the numbers, the ceilings of a synthetic cohort's test
cases from ``PainTask.reference_figures`` (their one implementation): the Bayes-optimal accuracy (each case's true pain
probability known) and, for a classifier that sees only the images, the image-only Bayes-optimal accuracy and the
accuracy and AUC of the image-only oracle P(pain | image findings), clinical covariates marginalised.

Resumable: a run whose ``test_scores.json`` exists is skipped; one with a ``last.pt`` but no result is resumed
(``--resume`` of the engine: bitwise the same as an uninterrupted run on the CPU). Runs are independent folders, so
several drivers with disjoint ``--models``/``--pairs`` can run at once; each rewrites the Markdown from every finished
run (atomically). The Markdown printed on stdout is the file written.

Protocols (``--protocol``): ``paper`` = ``Training/configs/pain.yaml`` (the paper's defaults, for a GPU);
``cpu`` = ``Training/configs/pain_cpu.yaml`` (the shipped model's protocol, on labels alone); ``reduced`` = the CPU
protocol on smaller working sizes (sagittal 16 x 64 x 64, axial 16 x 48 x 48: same fields of view, coarser spacing)
with ``--epochs`` (default 12) epochs. ``--epochs``, ``--sagittal-size``, ``--axial-size`` override any protocol and
the Markdown says so. Every protocol trains on the labels alone (``task_options.aux_findings = 0``, as the paper
does, whatever ``pain_cpu.yaml`` sets for the shipped model). ``--aux-findings W`` trains the chosen models with the
auxiliary findings loss of weight W instead (synthetic cohorts only); those runs live in their own folders (model key
``abpdc+aux0.5``) and rows, so they are never mistaken for, or skipped as, label-only runs.

The default cohort is ``data/pain250/manifest.csv`` (``python Training/cohorts.py pain --out data``). The Markdown
names paths inside the repository relative to its root (the command line too), so it reads the same on any machine.
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

REPO = Path(__file__).resolve().parents[1]
try:
    import cspineai  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "Logic"))

from cspineai.environment import cpu_name  # noqa: E402

VARIANT_MODELS = ("conv", "cdc", "abpdc")
BASELINE_MODELS = ("resnet", "vit", "efficientnet", "densenet")
#: The pairs of the paper's Table 2 (sagittal, axial).
BASELINE_PAIRS = (("T1_sag", "T2_tra"), ("T1_sag", "CT_bone"))
MODEL_LABELS = {"conv": "plain conv", "cdc": "CDC (θ=0.7)", "pdc": "PDC (θ=0.7)", "acdc": "ACDC", "abpdc": "ABPDC",
                "resnet": "ResNet-10 (MONAI)", "vit": "ViT (MONAI patch embedding)",
                "efficientnet": "EfficientNet-B0 (MONAI)", "densenet": "DenseNet (MONAI)"}
#: The paper trains on labels alone: pinned so that a weight set in a configuration file for the shipped model never
#: changes the ablation (``--aux-findings`` runs set their own, see :func:`model_key`).
LABELS_ONLY = {"task_options.aux_findings": 0.0, "task_options.fpran_sim": 0.0}
PROTOCOLS = {
    "paper": ("pain.yaml", {**LABELS_ONLY}),
    "cpu": ("pain_cpu.yaml", {**LABELS_ONLY}),
    "reduced": ("pain_cpu.yaml", {**LABELS_ONLY, "task_options.sagittal_size": [16, 64, 64],
                                  "task_options.axial_size": [16, 48, 48], "optim.epochs": 12,
                                  "early_stopping.patience": 0}),
}


# --- paths in the report ----------------------------------------------------------------------------------------


def repo_relative(text: str, cwd: Path | None = None) -> str:
    """A path (or ``--option=path``) as the report prints it: relative to the repository root when it lies inside it,
    so the report reads the same on every machine; anything else unchanged. With ``cwd``, relative paths that exist
    there are read from it (a command typed elsewhere); without, only absolute paths are rewritten (recorded commands).
    """
    head, sep, path = text.partition("=") if text.startswith("-") else ("", "", text)
    if cwd is not None and path and not os.path.isabs(path) and (cwd / path).exists():
        path = str(cwd / path)
    if not os.path.isabs(path):
        return text
    for candidate in (Path(os.path.abspath(path)), Path(path).resolve()):  # as typed, then through symlinks
        if candidate.is_relative_to(REPO):
            return head + sep + (candidate.relative_to(REPO).as_posix() or ".")
    return head + sep + path


def portable_command(tokens) -> str:
    """The driver's command line with paths inside the repository relative to its root (see :func:`repo_relative`)."""
    return "python benchmarks/ablation_pain.py " + " ".join(shlex.quote(repo_relative(t)) for t in tokens)


# --- one run -------------------------------------------------------------------------------------------------------


def model_key(model: str, aux_findings: float = 0.0, fpran: float = 0.0) -> str:
    """Folder and row of ``model`` trained with the auxiliary findings loss of this weight and/or jointly with FPRAN
    (λ_sim ``fpran``): ``abpdc+aux0.5``, ``abpdc+fpran1``; a label-only run keeps the bare name, so none share a
    folder."""
    return model + (f"+aux{aux_findings:g}" if aux_findings > 0 else "") + (f"+fpran{fpran:g}" if fpran > 0 else "")


def split_model_key(key: str) -> tuple[str, float, float]:
    """``(model, aux_findings weight, FPRAN λ_sim)`` of a :func:`model_key`."""
    model, *options = key.split("+")
    weights = {"aux": 0.0, "fpran": 0.0}
    for option in options:
        name = "fpran" if option.startswith("fpran") else "aux"
        weights[name] = float(option[len(name):])
    return model, weights["aux"], weights["fpran"]


def model_label(key: str) -> str:
    model, aux_findings, fpran = split_model_key(key)
    label = MODEL_LABELS.get(model, model)
    if fpran > 0:
        label += f" + FPRAN (joint training, λ_sim {fpran:g})"
    return f"{label} + auxiliary findings (weight {aux_findings:g}; synthetic only)" if aux_findings > 0 else label


def run_name(pair: tuple[str, str], key: str) -> str:
    return f"{pair[0]}+{pair[1]}/{key}"


def run_config(args, pair: tuple[str, str], key: str, fold: int, out: Path) -> dict:
    from cspineai.training.config import load_config

    config_file, protocol = PROTOCOLS[args.protocol]
    model, aux_findings, fpran = split_model_key(key)
    overrides = {**protocol, **protocol_overrides(args)}
    if aux_findings > 0:  # read from the folder's name, so a resumed run keeps the weight it started with
        overrides["task_options.aux_findings"] = aux_findings
    if fpran > 0:
        overrides["task_options.fpran_sim"] = fpran
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


def run_one(args, pair, key, fold, cases_test) -> dict | None:
    """Train (or resume) one configuration on one fold and score the test cases; ``None`` when it is not done."""
    from cspineai.atomic import atomic_write_text
    from cspineai.training.distributed import DistInfo
    from cspineai.training.loop import fit

    out = Path(args.out) / run_name(pair, key) / f"fold_{fold}"
    result_file = out / "test_scores.json"
    if result_file.is_file():
        return json.loads(result_file.read_text(encoding="utf-8"))
    if args.report_only:
        return None
    config = run_config(args, pair, key, fold, out)
    resume = (out / "checkpoints" / "last.pt").is_file() and not (out / "metrics.json").is_file()
    start = time.perf_counter()
    if not (out / "metrics.json").is_file():
        print(f"[ablation] {run_name(pair, key)} fold {fold}: training{' (resumed)' if resume else ''}",
              file=sys.stderr, flush=True)
        fit(config, DistInfo(), resume=resume)
    result = score_test_cases(config, out / "checkpoints" / "best.pt", cases_test)
    result["train_seconds"] = round(time.perf_counter() - start, 1)
    result["command"] = args.command
    result["protocol"] = {"name": args.protocol, "epochs": config["optim"]["epochs"],
                          "sagittal_size": config["task_options"]["sagittal_size"],
                          "axial_size": config["task_options"]["axial_size"], "widths": config["model"]["widths"],
                          "aux_findings": float(config["task_options"]["aux_findings"]),
                          "cohort": repo_relative(args.manifest, Path.cwd())}
    atomic_write_text(result_file, json.dumps(result, indent=1) + "\n")
    figures = result["figures"]
    print(f"[ablation] {run_name(pair, key)} fold {fold}: test accuracy {figures['accuracy']:.3f} "
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


def _row(label: str, summary: dict, applicable: bool = True) -> str:
    if not applicable:
        return f"| {label} | n/a (FPRAN registers a CT to an MRI; no CT in this pair) | | | | | |"
    if not summary:
        return f"| {label} | not run | | | | | |"
    return (f"| {label} | {summary['folds']} | {summary['accuracy']} | {summary['f1']} | {summary['auc']} | "
            f"{summary['auc_ci']} | {summary['val_auc']} |")


def _applicable(pair: tuple[str, str], key: str) -> bool:
    """False for a joint-FPRAN row of a pair without a CT series (nothing to register)."""
    return split_model_key(key)[2] == 0 or any(series.startswith("CT") for series in pair)


def _protocol_text(p: dict) -> str:
    # Runs finished before a key was recorded: label-only (the option did not exist), cohort unknown.
    aux_findings = p.get("aux_findings", 0.0)
    return (f"{p['name']}: {p['epochs']} epochs max, sagittal {'x'.join(map(str, p['sagittal_size']))}, axial "
            f"{'x'.join(map(str, p['axial_size']))}, widths {p['widths']}"
            + (f", auxiliary findings weight {aux_findings:g}" if aux_findings > 0 else "")
            + f", cohort `{p.get('cohort', 'not recorded')}`")


def render(args, command: str, cases, reference: dict, table: dict, protocols: list[dict]) -> str:
    """The Markdown report. ``reference``: ``PainTask.reference_figures`` of the test cases (empty for real ones);
    ``table``: ``pairs``, ``variants`` (models of Table 1), ``aux_keys`` (``--aux-findings`` rows) and ``summaries``
    (:func:`summarise` per :func:`run_name`)."""
    import torch

    n_test = sum(c.split == "test" for c in cases)
    n_train = len(cases) - n_test
    folds = sorted({c.fold for c in cases if c.split != "test" and c.fold is not None})
    prevalence = sum(int(c.label) for c in cases) / len(cases)
    lines = ["# Neck-pain classifier ablation on the synthetic cohort (structure of paper 000, Tables 1 and 2)", "",
             f"Command: `{command}`", "",
             f"- Cohort: `{repo_relative(args.manifest, Path.cwd())}`: {len(cases)} cases, {n_train} for "
             f"training/validation in {len(folds)} folds, {n_test} held-out test cases (`split = test`); prevalence "
             f"of pain {prevalence:.3f}.",
             f"- Machine: {cpu_name()}, {os.cpu_count()} CPU core(s) shared with other jobs (load average "
             f"{os.getloadavg()[0]:.1f} when this report was written), torch {torch.__version__}, "
             f"{torch.get_num_threads()} torch thread(s) per run; no GPU. Times are indicative only."]
    if reference:
        lines.append(f"- Ceilings on the {n_test} test cases (`PainTask.reference_figures`): Bayes-optimal accuracy "
                     f"{reference['bayes_accuracy']:.3f} (true pain probability known); for a classifier that sees "
                     f"only the images, Bayes-optimal accuracy {reference['image_only_bayes_accuracy']:.3f} and the "
                     "image-only oracle P(pain | image findings) (clinical covariates marginalised): accuracy "
                     f"{reference['image_only_oracle_accuracy']:.3f} at 0.5, AUC "
                     f"{reference['image_only_oracle_auc']:.3f}.")
    # Commands recorded before the report went portable may hold absolute paths.
    commands = sorted({portable_command(shlex.split(p["command"])[2:]) if "command" in p else "not recorded"
                       for p in protocols})
    lines += [f"- Runs below produced by: {'; '.join(f'`{c}`' for c in commands) or 'none yet'}."]
    described = "; ".join(sorted({_protocol_text(p) for p in protocols}))
    lines += [f"- Protocol of the runs below: {described or 'none finished'} (see the driver's docstring; "
              "`reduced` and epoch caps are below the paper's 100 epochs at full size, so these are not the paper's "
              "protocol). All runs train on the labels alone, as the paper does, except rows marked \"auxiliary "
              "findings\" (`--aux-findings W`), whose network also regresses the synthetic outcome rule's image "
              "findings with loss weight W: privileged information that only a synthetic cohort has.",
              "- Each cell: test-case figures of the fold models, mean ± SD over the folds that ran (threshold: "
              "Youden on that fold's validation cases); AUC 95% CI: DeLong, on the fold models' averaged "
              "probabilities; last column: validation AUC (best epoch, fold's own validation cases).", ""]
    header = ["| model | folds | accuracy | F1 | AUC | AUC 95% CI (DeLong) | val AUC |",
              "|---|---|---|---|---|---|---|"]
    lines += ["## Table 1: modality pairs × convolution variants", ""]
    for pair in table["pairs"]:
        lines += [f"### {pair[0]} + {pair[1]}", "", *header]
        keys = _with_aux(table["variants"], table["aux_keys"])
        for key in keys:
            lines.append(_row(model_label(key), table["summaries"].get(run_name(pair, key), {}),
                              _applicable(pair, key)))
        if not any(split_model_key(k)[2] > 0 for k in keys):
            lines.append("| + FPRAN | not run (`--fpran 1`) | | | | | |")
        lines.append("")
    lines += ["## Table 2: MONAI baselines in the same two-branch frame", ""]
    for pair in BASELINE_PAIRS:
        lines += [f"### {pair[0]} + {pair[1]}", "", *header]
        for key in _with_aux((*BASELINE_MODELS, "abpdc"), table["aux_keys"]):
            lines.append(_row(model_label(key), table["summaries"].get(run_name(pair, key), {}),
                              _applicable(pair, key)))
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


def _with_aux(models, aux_keys) -> list[str]:
    """Each model's label-only row followed by its ``--aux-findings`` rows."""
    return [key for model in models for key in (model, *(k for k in aux_keys if split_model_key(k)[0] == model))]


def parse_pairs(text: str):
    from cspineai.nn.classifier import PAPER_PAIRS

    if text == "all":
        return list(PAPER_PAIRS)
    pairs = []
    for item in text.split(","):
        sagittal, _, axial = item.partition("+")
        pairs.append((sagittal.strip(), axial.strip()))
    return pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=str(REPO / "data" / "pain250" / "manifest.csv"))
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
    parser.add_argument("--aux-findings", type=float, default=0.0, metavar="W",
                        help="train the chosen models with the auxiliary findings loss of weight W (synthetic cohorts "
                             "only; own folders and rows); default 0: labels alone, the paper's protocol")
    parser.add_argument("--fpran", type=float, default=0.0, metavar="W",
                        help="train the chosen ABPDC-frame models jointly with FPRAN (task_options.fpran_sim = W, the "
                             "paper's L_class + L_sim + L_reg; own folders and rows); default 0: no FPRAN")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1: see pain_cpu.yaml)")
    parser.add_argument("--report-only", action="store_true", help="run nothing; rewrite the Markdown")
    args = parser.parse_args(argv)
    if args.aux_findings < 0:
        parser.error("--aux-findings must be 0 (labels alone) or a positive weight")
    tokens = sys.argv[1:] if argv is None else argv
    args.command = portable_command(repo_relative(t, Path.cwd()) for t in tokens)
    return args


def plan_runs(args) -> list[tuple[tuple[str, str], str]]:
    """``(pair, model key)`` of every configuration this invocation trains; baselines on the Table 2 pairs only."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    pairs = parse_pairs(args.pairs)
    jobs = [(pair, m) for pair in pairs for m in models if m not in BASELINE_MODELS]
    jobs += [(pair, m) for pair in pairs if pair in BASELINE_PAIRS for m in models if m in BASELINE_MODELS]
    return [(pair, model_key(m, args.aux_findings, args.fpran)) for pair, m in jobs]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch

    from cspineai.atomic import atomic_write_text
    from cspineai.manifest import read_manifest
    from cspineai.training.tasks import get_task

    torch.set_num_threads(args.threads)
    cases = read_manifest(args.manifest, require=("label",))
    test_cases = [c for c in cases if c.split == "test"]
    if not test_cases:
        from cspineai.errors import CSpineInputError

        raise CSpineInputError(args.manifest, "has no test cases (split = test); the ablation scores those")
    folds = sorted({c.fold for c in cases if c.split != "test" and c.fold is not None})
    if args.folds != "all":
        folds = [int(f) for f in args.folds.split(",")]
    jobs = plan_runs(args)
    for pair, key in jobs:
        for fold in folds:
            run_one(args, pair, key, fold, test_cases)

    # The report covers every finished run under --out (other drivers' too), whatever this invocation ran.
    summaries, protocols = {}, []
    for folder in sorted(Path(args.out).glob("*+*/*")):
        results = [json.loads(f.read_text(encoding="utf-8")) for f in sorted(folder.glob("fold_*/test_scores.json"))]
        if results:
            summaries[f"{folder.parent.name}/{folder.name}"] = summarise(results)
            protocols += [{**r["protocol"], **({"command": r["command"]} if "command" in r else {})} for r in results]
    keys = {key for _, key in jobs} | {name.split("/")[1] for name in summaries}
    models = {split_model_key(k)[0] for k in keys}
    table = {"pairs": parse_pairs("all"), "summaries": summaries,
             "variants": [m for m in (*VARIANT_MODELS, "pdc", "acdc") if m in VARIANT_MODELS or m in models],
             "aux_keys": sorted((k for k in keys if max(split_model_key(k)[1:]) > 0), key=split_model_key)}
    reference = get_task("pain").reference_figures(test_cases)
    markdown = render(args, args.command, cases, reference, table, protocols)
    atomic_write_text(args.markdown, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
