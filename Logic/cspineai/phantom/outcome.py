"""Clinical covariates and the postoperative neck-pain rule.

The label is a Bernoulli draw with probability ``p = sigmoid(logit)``; the logit is a documented linear rule on
image-visible findings (extensor fatty infiltration on T1, facet arthropathy / osteophytes / OPLL on CT, Modic endplate
changes, cord compression and T2 hyperintensity) and clinical covariates. A classifier that knew every input of the rule
exactly would still be wrong with probability ``min(p, 1 - p)``; its accuracy, the Bayes-optimal accuracy
``E[max(p, 1 - p)]``, is computed by :func:`bayes_accuracy` and reported in ``docs/phantom.md``.
"""

from __future__ import annotations

import numpy as np

#: Weights of the rule (per unit of each term); RULE_SCALE multiplies them all, RULE_INTERCEPT sets the prevalence.
RULE_WEIGHTS = {
    "extensor_fat": 1.5,  # per 0.08 of fat fraction above 0.17 (deep extensors, T1 bright streaks)
    "facet": 0.9,  # per grade of the worst facet joint (0..3)
    "modic": 1.2,  # any Modic type 1 or 2 change (type 1 counts 1.3x)
    "compression": 3.0,  # worst cord flattening, 1 - AP ratio (0..0.65)
    "t2_hyperintensity": 0.8,
    "opll": 0.7,
    "vas": 0.35,  # per point of preoperative neck-pain VAS above 5
    "age": 0.025,  # per year above 55
    "female": 0.35,
    "bmi": 0.06,  # per kg/m2 above 24.5
    "joa": -0.12,  # per JOA point above 12 (better function, less pain)
    "duration": 0.3,  # per e-fold of symptom duration above 12 months
    "smoking": 0.5,
}
RULE_SCALE = 1.45
RULE_INTERCEPT = -4.97
#: Prevalence of postoperative neck pain (label 1) the rule gives on the cohort's population (see docs/phantom.md).
PREVALENCE = 0.405
#: Bayes-optimal accuracy of the rule on the cohort's population (Monte Carlo, see :func:`bayes_accuracy`).
BAYES_ACCURACY = 0.87
#: A finding counts as a cause (enters the causal mask) when its term adds at least this much to the logit.
CAUSAL_MIN_LOGIT = 0.4


def sample_demographics(rng: np.random.Generator) -> dict:
    """Age, sex and BMI of an adult operated for cervical spondylosis (means of ACDF cohorts: ~55 years, 60% men)."""
    return {
        "age": int(np.clip(round(rng.normal(55.0, 10.0)), 30, 82)),
        "sex": "F" if rng.random() < 0.42 else "M",
        "bmi": round(float(np.clip(rng.normal(24.6, 3.3), 17.0, 38.0)), 1),
    }


def sample_symptoms(rng: np.random.Generator, demographics: dict, findings: dict) -> dict:
    """Preoperative neck VAS (0-10), JOA score (0-17, lower is worse), symptom duration (months), smoking (0/1)."""
    compression = findings["max_compression"]
    joa = int(np.clip(round(rng.normal(14.0 - 6.0 * compression, 1.8)), 4, 17))
    smoking = int(rng.random() < (0.35 if demographics["sex"] == "M" else 0.08))
    return {
        "vas_neck_preop": int(np.clip(round(rng.normal(5.0, 2.0)), 0, 10)),
        "joa": joa,
        "symptom_months": round(float(np.clip(rng.lognormal(np.log(12.0), 0.9), 1.0, 240.0)), 1),
        "smoking": smoking,
    }


def rule_terms(findings: dict, clinical: dict) -> dict[str, float]:
    """Each term's contribution to the logit (before :data:`RULE_SCALE`), keyed like :data:`RULE_WEIGHTS`.

    Per-level terms are also returned as ``facet:<disc>``, ``modic:<disc>``, ``compression:<disc>`` so that the causal
    mask can mark exactly the levels that drove the label.
    """
    w = RULE_WEIGHTS
    levels = findings["levels"]
    terms: dict[str, float] = {}
    terms["extensor_fat"] = w["extensor_fat"] * (findings["extensor_fat_fraction"] - 0.17) / 0.08
    worst_facet = max(f["facet_arthropathy"] for f in levels.values())
    terms["facet"] = w["facet"] * worst_facet
    for level, f in levels.items():
        terms[f"facet:{level}"] = w["facet"] * f["facet_arthropathy"] if f["facet_arthropathy"] >= 2 else 0.0
        terms[f"modic:{level}"] = w["modic"] * (1.3 if f["modic"] == 1 else 1.0) if f["modic"] in (1, 2) else 0.0
        terms[f"compression:{level}"] = w["compression"] * (1.0 - f["cord_compression_ratio"])
    terms["modic"] = max(terms[f"modic:{level}"] for level in levels)
    terms["compression"] = w["compression"] * findings["max_compression"]
    terms["t2_hyperintensity"] = w["t2_hyperintensity"] * any(f["cord_t2_hyperintensity"] for f in levels.values())
    terms["opll"] = w["opll"] * bool(findings["opll"])
    terms["vas"] = w["vas"] * (clinical["vas_neck_preop"] - 5)
    terms["age"] = w["age"] * (clinical["age"] - 55)
    terms["female"] = w["female"] * (clinical["sex"] == "F")
    terms["bmi"] = w["bmi"] * (clinical["bmi"] - 24.5)
    terms["joa"] = w["joa"] * (clinical["joa"] - 12)
    terms["duration"] = w["duration"] * np.log(clinical["symptom_months"] / 12.0)
    terms["smoking"] = w["smoking"] * clinical["smoking"]
    return {k: float(v) for k, v in terms.items()}


_SUMMED = ("extensor_fat", "facet", "modic", "compression", "t2_hyperintensity", "opll", "vas", "age", "female", "bmi",
           "joa", "duration", "smoking")


def pain_probability(findings: dict, clinical: dict) -> float:
    """Probability of postoperative neck pain under the rule."""
    terms = rule_terms(findings, clinical)
    logit = RULE_INTERCEPT + RULE_SCALE * sum(terms[k] for k in _SUMMED)
    return float(1.0 / (1.0 + np.exp(-logit)))


def causes(findings: dict, clinical: dict) -> dict[str, bool]:
    """Image findings whose term raised the logit by at least :data:`CAUSAL_MIN_LOGIT`: what the causal mask marks.

    Keys: ``extensor_fat``, ``opll``, ``facet:<disc>``, ``modic:<disc>``, ``compression:<disc>``.
    """
    terms = rule_terms(findings, clinical)
    out = {}
    for key, value in terms.items():
        if key == "extensor_fat" or key == "opll" or ":" in key:
            out[key] = RULE_SCALE * value >= CAUSAL_MIN_LOGIT
    return out


def image_only_probability(findings: dict, draws: int = 2000, seed: int = 0) -> float:
    """P(pain | image findings): the rule's probability averaged over the clinical covariates, drawn for these findings
    as the generator draws them. The best an image-only classifier (the paper's two branches see no clinical table)
    can know; ``max(q, 1 - q)`` averaged over cases is its Bayes-optimal accuracy, which is lower than the full
    rule's because age, sex, BMI, VAS, JOA, duration and smoking move the logit too.
    """
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(draws):
        demographics = sample_demographics(rng)
        total += pain_probability(findings, {**demographics, **sample_symptoms(rng, demographics, findings)})
    return total / draws


def bayes_accuracy(n: int = 4000, seed: int = 0) -> dict[str, float]:
    """Monte Carlo of the rule over the cohort's population: prevalence E[p] and Bayes-optimal accuracy E[max(p, 1-p)].

    Draws patients exactly as :func:`cspineai.phantom.generate_case` does (no images); returns the estimates and
    their standard errors.
    """
    from . import sample_parameters

    p = np.array([sample_parameters(seed * 1_000_003 + i)["probability"] for i in range(n)])
    best = np.maximum(p, 1.0 - p)
    return {"n": n, "prevalence": float(p.mean()), "prevalence_se": float(p.std() / np.sqrt(n)),
            "bayes_accuracy": float(best.mean()), "bayes_accuracy_se": float(best.std() / np.sqrt(n))}
