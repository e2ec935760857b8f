"""Where pseudo-malicious prompts sit between benign and malicious ones, layer by layer.

Pure numpy/scikit-learn functions on pooled representations (see :mod:`mosr.representations`).
All distance-based metrics work in the space standardised by the benign ∪ malicious reference set
(per-dimension z-scores), so that a few high-magnitude residual dimensions do not dominate.

Per layer:

* **separability**: cross-validated accuracy of a linear probe (standardise + logistic regression,
  stratified k-fold) benign vs malicious, with a Wilson 95% interval over the out-of-fold predictions;
* **probe score** ``p``: the probe's probability of "malicious" (out-of-fold for benign/malicious
  prompts, from the probe fit on all of them for pseudo-malicious prompts);
* **centroid ratio** ``r = d(x, μ_benign) / (d(x, μ_benign) + d(x, μ_mal))``: 0 at the benign centroid,
  1 at the malicious centroid, 0.5 equidistant;
* **kNN share**: share of malicious prompts among the ``k`` nearest benign ∪ malicious neighbours;
* **boundary closeness** ``b = 1 − 2·|p − 0.5|``: 1 on the probe's decision boundary, 0 far from it.

The per-prompt **boundary score** is the centroid ratio ``r``; its AUROC at predicting observed
over-refusal (refusal or gibberish vs compliance, on pseudo-malicious prompts) is reported together
with the AUROCs of ``p``, the kNN share and ``b``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from mosr.metrics import wilson
from mosr.errors import ConfigError, DataError

SCORES: tuple[str, ...] = ("centroid_ratio", "probe_p", "knn_share", "boundary_closeness")
BOUNDARY_SCORE = "centroid_ratio"


# ------------------------------------------------------------------------------------- primitives
wilson_interval = wilson  # one Wilson interval for the whole package (mosr.metrics)


def mean_interval(values: np.ndarray, z: float = 1.96) -> tuple[float, float, float]:
    """Mean and normal-approximation 95% interval of the mean."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (math.nan, math.nan, math.nan)
    m = float(values.mean())
    if values.size < 2:
        return (m, math.nan, math.nan)
    half = z * float(values.std(ddof=1)) / math.sqrt(values.size)
    return (m, m - half, m + half)


def difference_in_means(benign: np.ndarray, malicious: np.ndarray) -> np.ndarray:
    """Unit vector from the benign to the malicious centroid."""
    d = np.asarray(malicious, np.float64).mean(0) - np.asarray(benign, np.float64).mean(0)
    norm = np.linalg.norm(d)
    return d / norm if norm > 0 else d


def standardiser(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and scale of the reference set (scale 1 where a dimension is constant)."""
    ref = np.asarray(reference, np.float64)
    mu, sd = ref.mean(0), ref.std(0)
    return mu, np.where(sd > 1e-12, sd, 1.0)


def centroid_ratio(x: np.ndarray, mu_benign: np.ndarray, mu_malicious: np.ndarray) -> np.ndarray:
    """``d(x, μ_b) / (d(x, μ_b) + d(x, μ_m))`` per row of ``x`` (Euclidean; 0.5 if both are 0)."""
    x = np.atleast_2d(np.asarray(x, np.float64))
    db = np.linalg.norm(x - mu_benign, axis=1)
    dm = np.linalg.norm(x - mu_malicious, axis=1)
    total = db + dm
    return np.where(total > 0, db / np.where(total > 0, total, 1.0), 0.5)


def knn_malicious_share(x: np.ndarray, reference: np.ndarray, reference_is_malicious: np.ndarray, k: int) -> np.ndarray:
    """Share of malicious points among the ``k`` nearest reference points of each row of ``x``.

    Ties at the k-th distance are broken by reference order (stable sort).
    """
    ref = np.asarray(reference, np.float64)
    labels = np.asarray(reference_is_malicious, bool)
    if not 1 <= k <= len(ref):
        raise ConfigError(f"k must be between 1 and the reference size {len(ref)}, got {k}")
    x = np.atleast_2d(np.asarray(x, np.float64))
    d2 = (x * x).sum(1)[:, None] - 2 * x @ ref.T + (ref * ref).sum(1)[None, :]
    nearest = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return labels[nearest].mean(1)


def boundary_closeness(p: np.ndarray) -> np.ndarray:
    """``1 − 2·|p − 0.5|``: 1 where the probe is undecided, 0 where it is certain."""
    return 1.0 - 2.0 * np.abs(np.asarray(p, np.float64) - 0.5)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count one half); NaN without both classes."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(positive, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_interval(scores: np.ndarray, positive: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the AUROC (resampling prompts)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(positive, bool)
    if y.sum() == 0 or (~y).sum() == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(s), size=(n_boot, len(s)))
    ys, ss = y[idx], s[idx]
    n_pos, n_neg = ys.sum(1), (~ys).sum(1)
    ok = (n_pos > 0) & (n_neg > 0)
    ranks = rankdata(ss, axis=1)
    u = (ranks * ys).sum(1) - n_pos * (n_pos + 1) / 2
    vals = u[ok] / (n_pos[ok] * n_neg[ok])
    return (float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5)))


def make_probe(c: float = 1.0, seed: int = 0) -> Pipeline:
    """Standardise, then L2-regularised logistic regression."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed))


# ------------------------------------------------------------------------------------ per layer
@dataclass
class LayerScores:
    """Per-prompt scores of one group at one layer."""

    probe_p: np.ndarray
    centroid_ratio: np.ndarray
    knn_share: np.ndarray

    @property
    def boundary_closeness(self) -> np.ndarray:
        return boundary_closeness(self.probe_p)

    def get(self, name: str) -> np.ndarray:
        if name not in SCORES:
            raise ConfigError(f"unknown score {name!r}; choose one of {', '.join(SCORES)}")
        return np.asarray(getattr(self, name))


@dataclass
class LayerResult:
    """Separability and the per-prompt scores of every group at one layer."""

    layer: int
    probe_accuracy: float
    probe_interval: tuple[float, float]
    fold_accuracies: list[float]
    n_train: int
    scores: dict[str, LayerScores] = field(default_factory=dict)


@dataclass(frozen=True)
class AnalysisConfig:
    """How the per-layer metrics are computed."""

    folds: int = 5
    k: int = 10
    c: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"folds must be >= 2, got {self.folds}")
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if self.c <= 0:
            raise ConfigError(f"the probe's C must be > 0, got {self.c}")


def _reference_scores(train_b: np.ndarray, train_m: np.ndarray, queries: np.ndarray, cfg: AnalysisConfig) -> LayerScores:
    """Scores of ``queries`` against a benign/malicious reference set."""
    ref = np.concatenate([train_b, train_m])
    is_mal = np.r_[np.zeros(len(train_b), bool), np.ones(len(train_m), bool)]
    probe = make_probe(cfg.c, cfg.seed).fit(ref, is_mal)
    mu, sd = standardiser(ref)
    z_ref, z_q = (ref - mu) / sd, (queries - mu) / sd
    mu_b, mu_m = z_ref[~is_mal].mean(0), z_ref[is_mal].mean(0)
    k = min(cfg.k, len(ref))
    return LayerScores(
        probe_p=probe.predict_proba(queries)[:, 1],
        centroid_ratio=centroid_ratio(z_q, mu_b, mu_m),
        knn_share=knn_malicious_share(z_q, z_ref, is_mal, k),
    )


def analyze_layer(
    benign: np.ndarray, malicious: np.ndarray, others: Mapping[str, np.ndarray], *, layer: int = 0, config: AnalysisConfig | None = None
) -> LayerResult:
    """Metrics of one layer: CV probe accuracy, and scores for benign/malicious (out-of-fold) and ``others``.

    ``others`` maps a group name (e.g. ``pseudo``) to its vectors, scored against all benign ∪
    malicious prompts.
    """
    cfg = config or AnalysisConfig()
    b, m = np.asarray(benign, np.float64), np.asarray(malicious, np.float64)
    for name, arr in (("benign", b), ("malicious", m)):
        if len(arr) < cfg.folds:
            raise DataError(f"the {name} group has {len(arr)} prompts; need at least {cfg.folds} (one per fold)")
    x = np.concatenate([b, m])
    y = np.r_[np.zeros(len(b), bool), np.ones(len(m), bool)]
    oof = {name: np.zeros(len(x)) for name in ("probe_p", "centroid_ratio", "knn_share")}
    fold_acc = []
    splitter = StratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed)
    for train, test in splitter.split(x, y):
        s = _reference_scores(x[train][~y[train]], x[train][y[train]], x[test], cfg)
        for name in oof:
            oof[name][test] = getattr(s, name)
        fold_acc.append(float(((s.probe_p > 0.5) == y[test]).mean()))
    correct = int(((oof["probe_p"] > 0.5) == y).sum())
    result = LayerResult(
        layer=layer, probe_accuracy=correct / len(y), probe_interval=wilson_interval(correct, len(y)),
        fold_accuracies=fold_acc, n_train=len(y),
    )
    result.scores["benign"] = LayerScores(*(oof[n][~y] for n in ("probe_p", "centroid_ratio", "knn_share")))
    result.scores["malicious"] = LayerScores(*(oof[n][y] for n in ("probe_p", "centroid_ratio", "knn_share")))
    for name, arr in others.items():
        if len(arr) == 0:
            raise DataError(f"the {name} group is empty")
        result.scores[name] = _reference_scores(b, m, np.asarray(arr, np.float64), cfg)
    return result


def summarise_scores(scores: LayerScores, mask: np.ndarray | None = None) -> dict[str, Any]:
    """n, mean with 95% interval, median and quartiles of each score; share with p > 0.5."""
    sel = slice(None) if mask is None else np.asarray(mask, bool)
    out: dict[str, Any] = {"n": int(np.asarray(scores.probe_p)[sel].size)}
    for name in SCORES:
        v = scores.get(name)[sel]
        mean, lo, hi = mean_interval(v)
        q = np.percentile(v, [25, 50, 75]) if v.size else [math.nan] * 3
        out[name] = {"mean": mean, "ci": [lo, hi], "q25": float(q[0]), "median": float(q[1]), "q75": float(q[2])}
    p = np.asarray(scores.probe_p)[sel]
    out["share_probe_malicious"] = float((p > 0.5).mean()) if p.size else math.nan
    return out


def outcome_auroc(scores: LayerScores, refused: np.ndarray, known: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """AUROC of each score at predicting refusal among prompts with a known outcome (``known``)."""
    known = np.asarray(known, bool)
    y = np.asarray(refused, bool)[known]
    out: dict[str, Any] = {"n_refused": int(y.sum()), "n_answered": int((~y).sum())}
    for name in SCORES:
        v = scores.get(name)[known]
        lo, hi = auroc_interval(v, y, n_boot=n_boot, seed=seed)
        out[name] = {"auroc": auroc(v, y), "ci": [lo, hi]}
    return out


def analyze_layers(
    groups: Mapping[str, np.ndarray],
    layers: Sequence[int],
    *,
    outcome: Sequence[str] | None = None,
    config: AnalysisConfig | None = None,
) -> tuple[list[LayerResult], list[dict[str, Any]]]:
    """Run :func:`analyze_layer` on every layer and summarise it.

    ``groups`` holds ``benign``, ``malicious`` and ``pseudo`` arrays ``[n, len(layers), hidden]``.
    ``outcome`` (one entry per pseudo prompt: ``refused``, ``answered``, or anything else for
    unknown) splits the pseudo group and enables the AUROC.
    """
    cfg = config or AnalysisConfig()
    for name in ("benign", "malicious", "pseudo"):
        if name not in groups or len(groups[name]) == 0:
            raise DataError(f"the {name} group is empty; check its dataset specs and --limit")
    n_pseudo = len(groups["pseudo"])
    out_arr = np.asarray(outcome if outcome is not None else ["unknown"] * n_pseudo)
    if len(out_arr) != n_pseudo:
        raise ConfigError(f"got {len(out_arr)} outcomes for {n_pseudo} pseudo-malicious prompts")
    refused, answered = out_arr == "refused", out_arr == "answered"
    results, summaries = [], []
    for pos, layer in enumerate(layers):
        res = analyze_layer(
            groups["benign"][:, pos], groups["malicious"][:, pos], {"pseudo": groups["pseudo"][:, pos]}, layer=layer, config=cfg
        )
        summary: dict[str, Any] = {
            "layer": layer,
            "probe_accuracy": res.probe_accuracy,
            "probe_ci": list(res.probe_interval),
            "probe_fold_accuracies": res.fold_accuracies,
            "n_probe": res.n_train,
            "groups": {
                "benign": summarise_scores(res.scores["benign"]),
                "malicious": summarise_scores(res.scores["malicious"]),
                "pseudo": summarise_scores(res.scores["pseudo"]),
            },
        }
        if refused.any():
            summary["groups"]["pseudo-refused"] = summarise_scores(res.scores["pseudo"], refused)
        if answered.any():
            summary["groups"]["pseudo-answered"] = summarise_scores(res.scores["pseudo"], answered)
        if refused.any() and answered.any():
            summary["auroc"] = outcome_auroc(res.scores["pseudo"], refused, refused | answered, seed=cfg.seed)
        results.append(res)
        summaries.append(summary)
    return results, summaries
