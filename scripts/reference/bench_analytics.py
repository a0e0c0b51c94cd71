"""The Python side of `niyet bench analytics`: times lifetimes (BG/NBD and Gamma-Gamma
fits), marketing-attribution-models (Markov) and ChannelAttribution (Markov) on the
files the benchmark wrote. Only the model computation is timed. Prints one JSON line.

Usage: python bench_analytics.py customers.csv journeys.csv
"""
import json
import sys
import time

import pandas as pd

from analytics import path_table


def main(customers_csv, journeys_csv):
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from mam import MAM
    import ChannelAttribution as ca

    out = {}
    c = pd.read_csv(customers_csv)
    t = time.perf_counter()
    bgf = BetaGeoFitter(penalizer_coef=0.0).fit(c["frequency"], c["recency"], c["T"])
    out["lifetimes_bgnbd_s"] = time.perf_counter() - t
    out["bgnbd"] = {k: float(v) for k, v in bgf.params_.items()}
    rep = c[c["frequency"] > 0]
    t = time.perf_counter()
    ggf = GammaGammaFitter(penalizer_coef=0.0).fit(rep["frequency"], rep["monetary"])
    out["lifetimes_gamma_gamma_s"] = time.perf_counter() - t
    out["gamma_gamma"] = {k: float(v) for k, v in ggf.params_.items()}
    print("lifetimes done", file=sys.stderr)

    j = pd.read_csv(journeys_csv)
    m = MAM(
        j,
        format_type="journey",
        channels_colname="path",
        journey_with_conv_colname="converted",
        user_id_colname="journey_id",
        time_till_conv_colname="hours",
        conversion_value_colname="value",
    )
    t = time.perf_counter()
    m.run_markov()
    out["mam_markov_s"] = time.perf_counter() - t
    print("marketing-attribution-models done", file=sys.stderr)

    g = path_table(j)
    t = time.perf_counter()
    ca.markov_model(
        g, "path", "total_conversions", var_value="total_conversion_value",
        var_null="total_null", order=1, max_step=100, seed=7, verbose=False, flg_pro=False,
    )
    out["ca_markov_s"] = time.perf_counter() - t
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
