"""Accuracy of the RTT model: rtt = 2 d stretch / v_fibre + access_ms (sovcloud.physics.latency).

Run: ``python benchmarks/latency_accuracy.py``

1. Every measured pair of ``data/validation/rtt_calibration.csv`` (the fitting data): distance,
   measured and predicted RTT, error; median |error| for 500-20,000 km and overall; worst pair.
2. Held-out cloud inter-region RTTs, not used by the fit:
   * IBM Cloud VPC, average inter-region latency, 17 Aug - 15 Sep 2024 (IBM Cloud docs,
     github.com/ibm-cloud-docs/vpc, _include-segments/network-latency.md, "15 Sep 2024" table);
   * AWS inter-region p50 RTTs from cloudping.co, as the sample matrix embedded in
     github.com/libp2p/jvm-libp2p (tools/simulator/.../latency/aws/AwsLatencies.kt; date not given).
   Region coordinates are those of the region's metro. Both directions are averaged.
3. Model selection: leave-one-out median |error| on the CSV for stretch only, stretch + access
   (shipped) and stretch + access + an extra short-distance stretch, all with the shipped loss.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sovcloud.geo import haversine_km
from sovcloud.physics.latency import DEFAULT_MODEL, FIBRE_KM_PER_MS, FIT_QUANTILE, LatencyModel, calibration_table, fit

# --- held-out data ------------------------------------------------------------------------------------------

IBM_REGIONS = {  # name: (lat, lon)
    "Dallas": (32.78, -96.80), "Toronto": (43.65, -79.38), "Washington DC": (38.90, -77.04),
    "Frankfurt": (50.11, 8.68), "London": (51.51, -0.13), "Madrid": (40.42, -3.70), "Osaka": (34.69, 135.50),
    "Sydney": (-33.87, 151.21), "Tokyo": (35.68, 139.65), "Sao Paulo": (-23.55, -46.63),
}
IBM_RTT = """
0 34 31 123 113 117 150 185 143 145
34 0 19 92 82 109 169 215 161 130
32 20 0 91 76 88 173 214 166 118
123 93 91 0 13 29 232 250 228 197
113 83 75 13 0 27 244 261 242 187
121 109 90 29 27 0 259 275 256 207
151 168 175 232 244 258 0 122 9 292
186 214 216 250 261 275 122 0 115 327
143 162 166 231 242 257 9 115 0 284
146 130 119 198 187 205 290 328 285 0
"""

AWS_REGIONS = {  # region: (lat, lon) of its metro
    "af-south-1": (-33.92, 18.42), "ap-east-1": (22.32, 114.17), "ap-northeast-1": (35.68, 139.65),
    "ap-northeast-2": (37.57, 126.98), "ap-northeast-3": (34.69, 135.50), "ap-south-1": (19.08, 72.88),
    "ap-southeast-1": (1.35, 103.82), "ap-southeast-2": (-33.87, 151.21), "ca-central-1": (45.50, -73.57),
    "eu-central-1": (50.11, 8.68), "eu-north-1": (59.33, 18.07), "eu-south-1": (45.46, 9.19),
    "eu-west-1": (53.35, -6.26), "eu-west-2": (51.51, -0.13), "eu-west-3": (48.86, 2.35),
    "me-south-1": (26.07, 50.56), "sa-east-1": (-23.55, -46.63), "us-east-1": (39.04, -77.49),
    "us-east-2": (39.96, -83.00), "us-west-1": (37.34, -121.89), "us-west-2": (45.84, -119.70),
}
AWS_RTT = """
3 240 353 381 360 155 201 411 224 159 176 168 158 146 150 143 342 231 241 290 273
241 1 46 37 39 87 36 126 186 189 211 180 211 204 197 121 299 188 175 145 136
358 46 4 34 10 123 68 104 144 223 243 213 201 211 216 161 257 146 135 108 98
385 38 33 2 24 126 70 142 172 223 241 212 229 238 244 156 285 174 162 128 118
364 39 10 24 2 131 75 119 150 231 248 220 207 217 221 166 262 151 138 111 99
162 91 126 124 131 1 54 145 186 110 131 102 120 111 104 35 298 185 194 228 218
205 39 69 69 75 58 4 93 209 157 177 148 182 171 166 85 322 213 200 172 162
412 128 109 141 118 146 93 1 198 249 294 238 256 264 279 176 312 198 187 138 140
225 186 143 172 149 187 210 197 2 92 107 99 70 78 83 162 125 14 24 79 60
162 189 223 223 230 110 158 249 92 2 22 12 26 17 12 87 204 91 102 151 141
179 210 243 242 249 130 178 295 108 22 2 31 41 33 30 105 215 112 121 175 159
171 179 214 214 220 101 150 238 101 11 31 1 35 25 20 77 212 101 110 160 151
158 212 201 230 207 120 181 256 70 27 42 34 1 13 18 95 176 69 79 128 119
148 202 210 238 216 111 171 265 78 17 32 25 13 1 9 87 186 76 86 147 128
151 197 215 246 221 104 167 279 84 12 30 20 18 10 1 80 195 83 92 143 134
147 122 162 159 168 35 87 179 163 85 105 78 96 87 79 1 271 160 170 220 212
343 299 256 285 263 297 322 311 125 204 215 214 177 186 194 273 1 113 124 173 174
232 188 146 174 150 186 211 199 15 92 111 102 70 76 82 160 114 4 13 62 64
242 176 133 161 138 197 200 187 25 102 121 111 79 86 93 170 124 12 4 53 52
292 146 108 128 109 227 171 139 79 151 173 160 128 147 142 220 171 62 50 3 22
274 136 97 120 99 217 161 140 60 140 156 150 119 128 134 211 174 63 51 22 3
"""


def held_out_pairs(regions: dict[str, tuple[float, float]], matrix: str
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Upper-triangle (distance km, RTT ms averaged over both directions) of a region matrix."""
    rtt = np.array([[float(x) for x in line.split()] for line in matrix.strip().splitlines()])
    ll = np.array(list(regions.values()))
    d = haversine_km(ll[:, 0, None], ll[:, 1, None], ll[None, :, 0], ll[None, :, 1])
    iu = np.triu_indices(len(regions), 1)
    return d[iu], (rtt[iu] + rtt.T[iu]) / 2.0


def errors(model: LatencyModel, d: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(100.0 * (model.rtt_ms(d) / y - 1.0), dtype=np.float64)


# --- alternative model forms for the leave-one-out comparison ----------------------------------------------


def _predict(form: str, p: NDArray[np.float64], d: NDArray[np.float64]) -> NDArray[np.float64]:
    unit = 2.0 * d / FIBRE_KM_PER_MS
    if form == "stretch":
        return np.asarray(unit * p[0], dtype=np.float64)
    if form == "stretch+access":
        return np.asarray(unit * p[0] + p[1], dtype=np.float64)
    return np.asarray(unit * (p[0] + p[2] * np.exp(-d / 1000.0)) + p[1], dtype=np.float64)


_START = {"stretch": ([1.5], [(1.0, 10.0)]),
          "stretch+access": ([1.5, 5.0], [(1.0, 10.0), (0.0, 200.0)]),
          "stretch+access+short": ([1.5, 5.0, 0.5], [(1.0, 10.0), (0.0, 200.0), (0.0, 10.0)])}


def _fit_form(form: str, d: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Fit one model form with the shipped loss (asymmetric soft-L1 on ln(pred/measured))."""
    from scipy.optimize import minimize

    tau, f = FIT_QUANTILE, 0.1

    def loss(p: NDArray[np.float64]) -> float:
        r = np.log(_predict(form, p, d) / y)
        w = np.where(r < 0.0, tau, 1.0 - tau)
        return float(np.sum(w * 2.0 * f * f * (np.sqrt(1.0 + (r / f) ** 2) - 1.0)))

    x0, bounds = _START[form]
    return np.asarray(minimize(loss, np.array(x0), method="L-BFGS-B", bounds=bounds).x, dtype=np.float64)


def loo_median_abs_error(form: str, d: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """Median |error| (%) predicting each pair from a fit on the other pairs."""
    errs = []
    for i in range(d.size):
        keep = np.arange(d.size) != i
        p = _fit_form(form, d[keep], y[keep])
        errs.append(abs(float(_predict(form, p, d[i:i + 1])[0]) / y[i] - 1.0) * 100.0)
    return float(np.median(errs))


def main() -> None:
    m = DEFAULT_MODEL
    print(f"model: rtt = 2 d x {m.stretch:g} / {m.fibre_km_per_ms:.3f} km/ms + {m.access_ms:g} ms "
          f"(refit now: {fit()})\n")
    t = calibration_table(m).sort_values("distance_km")
    print(f"{'pair':34s} {'km':>8s} {'measured':>9s} {'predicted':>9s} {'error %':>8s}")
    for row in t.itertuples():
        print(f"{row.pair:34s} {row.distance_km:8.0f} {row.measured_ms:9.1f} {row.predicted_ms:9.1f} "
              f"{row.error_pct:+8.1f}")
    err = t.error_pct.abs()
    band = (t.distance_km >= 500) & (t.distance_km <= 20_000)
    worst = t.loc[err.idxmax()]
    print(f"\nCSV: median |error| 500-20,000 km: {err[band].median():.1f} % (n={int(band.sum())}); "
          f"overall: {err.median():.1f} % (n={len(t)}); median signed: {t.error_pct.median():+.1f} %")
    print(f"CSV: worst pair: {worst.pair} {worst.distance_km:.0f} km, measured {worst.measured_ms:.1f} ms, "
          f"predicted {worst.predicted_ms:.1f} ms ({worst.error_pct:+.1f} %)")

    print("\nheld-out cloud inter-region RTTs (pairs 500-20,000 km):")
    median_fit = fit(quantile=0.5)
    for name, regions, matrix in (("IBM Cloud 2024-09", IBM_REGIONS, IBM_RTT), ("AWS cloudping p50", AWS_REGIONS,
                                                                                AWS_RTT)):
        d, y = held_out_pairs(regions, matrix)
        keep = (d >= 500) & (d <= 20_000)
        for label, model in (("shipped", m), ("median fit (quantile 0.5)", median_fit)):
            e = errors(model, d[keep], y[keep])
            print(f"  {name:18s} {label:26s} median |error| {np.median(np.abs(e)):5.1f} %, "
                  f"median signed {np.median(e):+5.1f} %, n={int(keep.sum())}")

    table = calibration_table(m)
    d_all, y_all = table.distance_km.to_numpy(), table.measured_ms.to_numpy()
    print("\nleave-one-out median |error| on the CSV (same loss as the shipped fit):")
    for form in ("stretch", "stretch+access", "stretch+access+short"):
        print(f"  {form:22s} {loo_median_abs_error(form, d_all, y_all):5.1f} %")


if __name__ == "__main__":
    main()
