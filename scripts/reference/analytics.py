"""Reference values for the analytics tests, from independent implementations.

Run:  python scripts/reference/analytics.py
Needs: pip install lifetimes marketing-attribution-models ChannelAttribution matplotlib

Writes, under crates/analytics/tests/data/:
  cdnow_reference.json       BG/NBD and Gamma-Gamma fitted by `lifetimes` on the CDNOW
                             sample shipped with it (cdnow_summary.csv, copied from the
                             package), with per-customer P(alive) and expected purchases.
  paths.csv                  a synthetic journey table (seeded), one row per journey.
  attribution_reference.json heuristic models and Markov attribution of paths.csv by
                             `marketing-attribution-models` (MAM) and `ChannelAttribution`.
The Rust tests compare against these files, so CI does not need Python packages.
"""
import json
import os
import random

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "crates", "analytics", "tests", "data")


def clv():
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    d = pd.read_csv(os.path.join(DATA, "cdnow_summary.csv"))
    bgf = BetaGeoFitter(penalizer_coef=0.0)
    bgf.fit(d["x"], d["t_x"], d["T"])
    rep = d[d["x"] > 0]
    ggf = GammaGammaFitter(penalizer_coef=0.0)
    ggf.fit(rep["x"], rep["zbar"])
    out = {
        "bgnbd": {k: float(v) for k, v in bgf.params_.items()},
        "gamma_gamma": {k: float(v) for k, v in ggf.params_.items()},
        "p_alive": [float(v) for v in bgf.conditional_probability_alive(d["x"], d["t_x"], d["T"])],
        "expected_10": [
            float(v)
            for v in bgf.conditional_expected_number_of_purchases_up_to_time(10, d["x"], d["t_x"], d["T"])
        ],
        "expected_52": [
            float(v)
            for v in bgf.conditional_expected_number_of_purchases_up_to_time(52, d["x"], d["t_x"], d["T"])
        ],
        "expected_value": [
            float(v) for v in ggf.conditional_expected_average_profit(rep["x"], rep["zbar"])
        ],
    }
    with open(os.path.join(DATA, "cdnow_reference.json"), "w") as f:
        json.dump(out, f)


CHANNELS = ["direct", "email", "organic_search", "paid_search", "paid_social"]


def paths():
    """3,000 journeys of 1-6 touches, no channel twice in a row; conversion more likely
    with e-mail and paid search."""
    rng = random.Random(20261201)
    rows = []
    for i in range(3000):
        n = rng.choice([1, 1, 2, 2, 3, 3, 4, 5, 6])
        chs = []
        for _ in range(n):
            c = rng.choice([c for c in CHANNELS if not chs or c != chs[-1]])
            chs.append(c)
        p = 0.08 + 0.12 * ("email" in chs) + 0.1 * ("paid_search" in chs) + 0.03 * n
        conv = rng.random() < p
        hours = sorted((round(rng.uniform(0, 240), 2) for _ in chs), reverse=True)
        value = round(rng.uniform(20, 400), 2) if conv else 0.0
        rows.append((f"j{i}", " > ".join(chs), " > ".join(str(h) for h in hours), int(conv), value))
    df = pd.DataFrame(rows, columns=["journey_id", "path", "hours", "converted", "value"])
    df.to_csv(os.path.join(DATA, "paths.csv"), index=False)
    return df


def path_table(df):
    """Journeys grouped by path, as ChannelAttribution takes them."""
    g = df.groupby("path").agg(
        total_conversions=("converted", "sum"),
        n=("converted", "size"),
        total_conversion_value=("value", "sum"),
    ).reset_index()
    g["total_null"] = g["n"] - g["total_conversions"]
    return g


def attribution(df):
    from mam import MAM
    import ChannelAttribution as ca

    m = MAM(
        df,
        format_type="journey",
        channels_colname="path",
        journey_with_conv_colname="converted",
        user_id_colname="journey_id",
        time_till_conv_colname="hours",
        conversion_value_colname="value",
    )

    mam = {}
    for name, run in [
        ("last_touch", m.run_last_click),
        ("first_touch", m.run_first_click),
        ("linear", m.run_linear),
        ("position_based", m.run_position_based),
        ("time_decay_168h", lambda: m.run_time_decay(168.0)),
        ("markov", m.run_markov),
    ]:
        t = run().to_dict()
        mam[name] = {str(k): float(v) for k, v in zip(t["channels"], t["attribution"])}

    g = path_table(df)
    heur = ca.heuristic_models(g, "path", "total_conversions", var_value="total_conversion_value", flg_pro=False)
    mk = ca.markov_model(
        g,
        "path",
        "total_conversions",
        var_value="total_conversion_value",
        var_null="total_null",
        order=1,
        nsim_start=1_000_000,
        max_step=100,
        out_more=True,
        seed=7,
        verbose=False,
        flg_pro=False,
    )
    res, re = mk["result"], mk["removal_effects"]
    ch = {
        "heuristic": {
            str(r["channel_name"]): {k: float(r[k]) for k in heur.columns if k != "channel_name"}
            for _, r in heur.iterrows()
        },
        "markov_conversions": {str(r["channel_name"]): float(r["total_conversions"]) for _, r in res.iterrows()},
        "markov_value": {str(r["channel_name"]): float(r["total_conversion_value"]) for _, r in res.iterrows()},
        "removal_effects": {str(r["channel_name"]): float(r["removal_effects_conversion"]) for _, r in re.iterrows()},
    }
    out = {"channels": CHANNELS, "mam": mam, "channel_attribution": ch}
    with open(os.path.join(DATA, "attribution_reference.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    clv()
    attribution(paths())
