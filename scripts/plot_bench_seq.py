"""Plot `jaxtalk bench seq --json` results: peak memory per device against seq devices.

    python scripts/plot_bench_seq.py OUT.png RESULTS.json [MORE.json ...]

One line per (attention kind, frames); a dashed line per (kind, frames) shows the ideal 1/n
scaling of the 1-device figure. Rows from several JSON files are merged.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(out: str, paths: list[str]) -> None:
  rows = [r for p in paths for r in json.load(open(p))["rows"] if "error" not in r]
  series: dict[tuple[str, int], list[dict]] = {}
  for r in rows:
    series.setdefault((r["attention"], r["frames"]), []).append(r)
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for (kind, t), rs in sorted(series.items()):
    rs = sorted(rs, key=lambda r: r["devices"])
    n = [r["devices"] for r in rs]
    gib = [r["peak_bytes"] / 2**30 for r in rs]
    (line,) = ax.plot(n, gib, "o-", label=f"{kind}, T={t} ({rs[0]['tokens']} tokens)")
    one = [r for r in rs if r["devices"] == 1]
    if one and len(n) > 1:
      ax.plot(n, [one[0]["peak_bytes"] / 2**30 / d for d in n], "--", color=line.get_color(),
              alpha=0.5)  # fmt: skip
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("seq devices (fake CPU devices)")
  ax.set_ylabel("peak memory per device (GiB)")
  ax.set_title("renderer train step, frames sharded over seq (dashed: ideal 1/n)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out)
  print(f"wrote {out}")


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:])
