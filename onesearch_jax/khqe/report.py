"""The SID report: a Markdown table of CUR/ICR and reconstruction errors per
variant, plus PNG cluster-size histograms (matplotlib, Agg backend)."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from onesearch_jax.khqe import sid_metrics

_ERROR_KEYS = ("input", "l1", "l2", "l3", "opq")


def _fmt_err(errors: Mapping[str, float], key: str) -> str:
  return f"{errors[key]:.4g}" if key in errors else "-"


def _safe(name: str) -> str:
  return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _histogram_png(name: str, codes: np.ndarray, path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
  groups = (
    ("L1 cluster", codes[:, :1]),
    ("(L1, L2) prefix", codes[:, :2]),
    ("full SID", codes),
  )
  for ax, (title, part) in zip(axes, groups, strict=True):
    _, sizes = np.unique(part, axis=0, return_counts=True)
    ax.hist(sizes, bins=min(50, max(1, int(sizes.max()))), log=True)
    ax.set_title(f"items per {title}")
    ax.set_xlabel("cluster size")
  axes[0].set_ylabel("clusters (log)")
  fig.suptitle(name)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def write_report(
  variants: Mapping[str, tuple[np.ndarray, tuple[int, int, int], Mapping[str, float]]],
  out_dir: str | pathlib.Path,
) -> str:
  """Writes ``report.md`` and ``hist_<variant>.png`` files.

  Args:
    variants: name -> (codes [N, L], levels (k1, k2, k3), reconstruction
      errors as returned by ``Quantizer.reconstruction_errors``).
    out_dir: output directory (created if missing).

  Returns:
    The Markdown text written to ``out_dir/report.md``.
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  lines = [
    "# SID report",
    "",
    "CUR/ICR as in SPEC §2.3 (CUR_Total denominator k1*k2*k3 for every variant);",
    "reconstruction error = mean squared residual norm after each level.",
    "",
    "| variant | levels | items | SIDs | CUR_L1 | CUR_L1xL2 | CUR_Total | ICR |"
    " err input | err L1 | err L2 | err L3 | err OPQ |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name, (codes, levels, errors) in variants.items():
    m = sid_metrics.cur_icr(codes, levels)
    errs = " | ".join(_fmt_err(errors, k) for k in _ERROR_KEYS)
    lines.append(
      f"| {name} | {'-'.join(str(k) for k in levels)} | {m['n_items']} | {m['n_sids']}"
      f" | {m['CUR_L1']:.2%} | {m['CUR_L1xL2']:.2%} | {m['CUR_Total']:.4%}"
      f" | {m['ICR']:.2%} | {errs} |"
    )
    _histogram_png(name, np.asarray(codes), out / f"hist_{_safe(name)}.png")
  lines.append("")
  for name in variants:
    lines.append(f"![{name} cluster sizes](hist_{_safe(name)}.png)")
  text = "\n".join(lines) + "\n"
  (out / "report.md").write_text(text, encoding="utf-8")
  return text


def build_notes(
  source: str,
  n_keywords: int,
  match_rates: Mapping[str, Mapping[str, float]],
  history: Sequence[Mapping[str, float]],
) -> str:
  """Markdown appended to the quantiser report: keywords and encoder.

  Wall times are not in it (they would change the artefact's content hash
  from run to run); they go to the manifest's unhashed ``info.timings_s``.
  """
  lines = [
    "",
    "## Keyword enhancement",
    "",
    f"{n_keywords} keywords mined from {source}.",
    "",
    "| texts | n | match rate | mean keywords per matched text |",
    "|---|---|---|---|",
  ]
  for name, m in match_rates.items():
    lines.append(
      f"| {name} | {int(m['texts'])} | {m['match_rate']:.2%} | "
      f"{m['mean_keywords_per_matched']:.2f} |"
    )
  if history:
    first, last = history[0], history[-1]
    lines += ["", "## Aligned encoder", "", "| loss | first step | last step |"]
    lines.append("|---|---|---|")
    for k in ("loss", "q2i", "q2q", "i2i", "rank"):
      lines.append(f"| {k} | {first[k]:.4f} | {last[k]:.4f} |")
  lines += ["", "Step wall times: `manifest.json` field `info.timings_s`."]
  return "\n".join(lines) + "\n"
