"""Records the oracle values for tunelab's comparison statistics (evalsuite/src/stats/)
from scipy and statsmodels. Run with a Python that has scipy, statsmodels and numpy:

    python tests/vectors/stats/record_stats.py > tests/vectors/stats/expected.json
"""
import json
import sys

import numpy as np
import scipy
import statsmodels
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

out = {"versions": {"python": sys.version.split()[0], "scipy": scipy.__version__, "statsmodels": statsmodels.__version__, "numpy": np.__version__}}

out["normal_quantile"] = [{"p": p, "q": float(stats.norm.ppf(p))} for p in (0.5, 0.8, 0.9, 0.975, 0.995, 0.025, 0.999)]

out["proportions"] = []
for k, n in [(0, 8), (8, 8), (3, 8), (1, 20), (19, 20), (50, 100), (0, 1), (7, 150), (149, 150)]:
    w = proportion_confint(k, n, alpha=0.05, method="wilson")
    b = proportion_confint(k, n, alpha=0.05, method="beta")
    out["proportions"].append({"k": k, "n": n, "wilson": [float(w[0]), float(w[1])], "clopper_pearson": [float(b[0]), float(b[1])]})

out["mcnemar"] = []
for b, c in [(0, 0), (1, 0), (3, 9), (10, 10), (0, 7), (12, 30), (40, 25)]:
    table = [[5, b], [c, 5]]
    out["mcnemar"].append({"b": b, "c": c, "p": float(mcnemar(table, exact=True).pvalue)})

out["holm"] = []
for ps in ([0.01, 0.04, 0.03, 0.2], [0.001, 0.5], [0.04], [0.02, 0.02, 0.9, 0.011, 0.6]):
    out["holm"].append({"p": ps, "adjusted": [float(x) for x in multipletests(ps, method="holm")[1]]})

rng = np.random.default_rng(7)
out["paired"] = []
for n, clusters in [(12, 3), (40, 8), (150, 10)]:
    base = np.round(rng.uniform(0, 1, n), 3)
    cand = np.round(np.clip(base + rng.normal(0.05, 0.2, n), 0, 1), 3)
    d = cand - base
    groups = [f"g{i % clusters}" for i in range(n)]
    fit = sm.OLS(d, np.ones(n)).fit(cov_type="cluster", cov_kwds={"groups": np.array([int(g[1:]) for g in groups]), "use_correction": False})
    se = float(d.std(ddof=1) / np.sqrt(n))
    z = float(stats.norm.ppf(0.975))
    out["paired"].append({
        "baseline": base.tolist(),
        "candidate": cand.tolist(),
        "clusters": groups,
        "diff": float(d.mean()),
        "se": se,
        "clt": [float(d.mean() - z * se), float(d.mean() + z * se)],
        "correlation": float(stats.pearsonr(base, cand)[0]),
        "clustered_se": float(fit.bse[0]),
        "detectable_effect": float((z + stats.norm.ppf(0.8)) * float(fit.bse[0])),
        "detectable_effect_unclustered": float((z + stats.norm.ppf(0.8)) * se),
    })

json.dump(out, sys.stdout, indent=1)
print()
