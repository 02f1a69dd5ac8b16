"""Evaluation outputs: metrics.json, run.json, report.md and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ranking.evaluate import ABLATIONS, BASELINES, K, SLICES
from ranking.reasons import language_name

HR = f"hr@{K}"
NDCG = f"ndcg@{K}"
TARGET_SLICES = ("all", "cross_lingual", "cold_item")
TARGET_RATIO = 1.5


def write_outputs(out: Path, metrics: dict[str, Any], details: dict[str, Any],
                  command: str) -> list[Path]:
    """Write every output file; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "metrics.json", out / "run.json", out / "report.md"]
    paths[0].write_text(json.dumps(metrics, indent=2) + "\n")
    paths[1].write_text(json.dumps({"command": command, **details}, indent=2) + "\n")
    paths += plot(out, metrics, details)
    paths[2].write_text(report_markdown(metrics, details, command, [p.name for p in paths[3:]]))
    return paths


def targets(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """xlrec against the best baseline per target slice: ratio and whether it is >= 1.5."""
    models = metrics["models"]
    if "xlrec" not in models:
        return {}
    out = {}
    for s in TARGET_SLICES:
        base = {m: models[m][s][HR] for m in BASELINES if m in models}
        if not base:
            continue
        best = max(base, key=base.__getitem__)
        ratio = models["xlrec"][s][HR] / base[best] if base[best] else float("inf")
        out[s] = {"best_baseline": best, "baseline_hr": base[best], "xlrec_hr": models["xlrec"][s][HR],
                  "ratio": ratio, "met": ratio >= TARGET_RATIO}
    return out


def _fmt(st: dict[str, Any]) -> str:
    return f"{st[HR]:.4f} / {st[NDCG]:.4f}" if st["n"] else "-"


def report_markdown(metrics: dict[str, Any], details: dict[str, Any], command: str,
                    plots: list[str]) -> str:
    models = metrics["models"]
    lines = ["# xlrec evaluation", "", f"Command: `{command}`", "",
             f"Events: {metrics['events_total']:,} read, {metrics['events_evaluated']:,} evaluated "
             f"(test-then-train from ts {metrics['eval_from']}), seed {metrics['seed']}, "
             f"catalog at the end: {details['catalog_size']:,} items"
             + (f"; every model replayed as a group of {metrics['workers']} workers, each with its own "
                "users' events and every item." if metrics.get("workers", 1) > 1 else "."),
             f"Time: embedding {details['embedding_seconds']:.0f} s (encoder "
             f"{details['encoder']}, cache hits {details['cache']['hits']}, misses "
             f"{details['cache']['misses']}), replay of all models {details['replay_seconds']:.0f} s.",
             "", f"## HR@{K} / NDCG@{K} per slice", "",
             "| model | " + " | ".join(f"{s} (n)" for s in SLICES) + f" | coverage@{K} | seconds |",
             "| --- |" + " --- |" * (len(SLICES) + 2)]
    for name, m in models.items():
        cells = [f"{_fmt(m[s])} ({m[s]['n']:,})" for s in SLICES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m[f'coverage@{K}']:.3f} | {m['seconds']:.1f} |")
    t = targets(metrics)
    if t:
        lines += ["", f"## Targets: xlrec >= {TARGET_RATIO}x the best baseline's HR@{K}", "",
                  "| slice | best baseline | its HR@10 | xlrec HR@10 | ratio | met |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for s, v in t.items():
            lines.append(f"| {s} | {v['best_baseline']} | {v['baseline_hr']:.4f} | "
                         f"{v['xlrec_hr']:.4f} | {v['ratio']:.2f}x | {'yes' if v['met'] else 'no'} |")
    if "xlrec" in models and all(a in models for a in ABLATIONS):
        x, nd, ne = models["xlrec"], models["xlrec-no-diversity"], models["xlrec-no-exploration"]
        lines += ["", "## Diversity and exploration (same run, same learnt model)", "",
                  f"| list shown | HR@{K} all | HR@{K} cold_item | coverage@{K} |", "| --- | --- | --- | --- |",
                  f"| by score only | {nd['all'][HR]:.4f} | {nd['cold_item'][HR]:.4f} | {nd[f'coverage@{K}']:.3f} |",
                  f"| + MMR diversity | {ne['all'][HR]:.4f} | {ne['cold_item'][HR]:.4f} | {ne[f'coverage@{K}']:.3f} |",
                  f"| + MMR + exploration (xlrec) | {x['all'][HR]:.4f} | {x['cold_item'][HR]:.4f} "
                  f"| {x[f'coverage@{K}']:.3f} |"]
    langs = _top_languages(models, 12)
    if langs:
        lines += ["", f"## HR@{K} per user language (main language so far)", "",
                  "| model | " + " | ".join(f"{language_name(l) or l} ({l})" for l in langs) + " |",
                  "| --- |" + " --- |" * len(langs)]
        for name, m in models.items():
            lines.append(f"| {name} | " + " | ".join(
                f"{m['per_language'][l][HR]:.3f}" if l in m["per_language"] else "-" for l in langs) + " |")
        n_row = next(iter(models.values()))["per_language"]
        lines.append("| n | " + " | ".join(f"{n_row[l]['n']:,}" if l in n_row else "-" for l in langs) + " |")
    if details.get("xlrec_weights"):
        lines += ["", f"## xlrec: feature weights learnt online ({details['xlrec_pairs']:,} pairs)", "",
                  "| feature | weight |", "| --- | --- |"]
        lines += [f"| {k} | {v:+.4f} |" for k, v in details["xlrec_weights"].items()]
    if details["bad_lines"]:
        lines += ["", f"## Malformed lines skipped ({len(details['bad_lines'])})", ""]
        lines += [f"- {b}" for b in details["bad_lines"][:50]]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _top_languages(models: dict[str, Any], n: int) -> list[str]:
    first = next(iter(models.values()), None)
    if not first:
        return []
    per = first["per_language"]
    return sorted(per, key=lambda l: -per[l]["n"])[:n]


def plot(out: Path, metrics: dict[str, Any], details: dict[str, Any]) -> list[Path]:
    """HR@10 per model and slice, per language, and weekly over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = metrics["models"]
    names = list(models)
    paths = []

    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        ax.bar([j + i * width for j in range(len(SLICES))], [models[name][s][HR] for s in SLICES],
               width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(SLICES))], SLICES)
    ax.set_ylabel(f"HR@{K}")
    ax.set_title(f"HR@{K} per model and slice")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    paths.append(out / "hr_slices.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    langs = _top_languages(models, 12)
    fig, ax = plt.subplots(figsize=(12, 4.5))
    for i, name in enumerate(names):
        per = models[name]["per_language"]
        ax.bar([j + i * width for j in range(len(langs))],
               [per[l][HR] if l in per else 0.0 for l in langs], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(langs))], langs)
    ax.set_ylabel(f"HR@{K}")
    ax.set_title(f"HR@{K} per user language")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    paths.append(out / "hr_languages.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(11, 4.5))
    for name in names:
        weekly = details["weekly"].get(name, {})
        weeks = sorted(weekly, key=int)
        ax.plot([int(w) for w in weeks], [weekly[w][HR] for w in weeks], marker=".", label=name)
    ax.set_xlabel("week since eval_from")
    ax.set_ylabel(f"HR@{K}")
    ax.set_title(f"HR@{K} over time (weekly)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    paths.append(out / "hr_weekly.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
