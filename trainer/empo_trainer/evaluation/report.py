"""report.html for a run: training curves, eval accuracy per checkpoint, sample completions.

Self-contained (inline CSS, plots as base64 PNG, no network), so it opens from S3, a laptop or a CI
artifact. The plotted numbers are also embedded as a JSON data island
(`<script type="application/json" id="empo-report-data">`) for scripts and tests.

Inputs in the run folder: metrics.jsonl (one line per step), eval/step-N.json (EvalReport.to_json),
and samples.jsonl when the driver writes one (completions with their answer clusters).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from empo_api.uri import Uri

from ..storage import LocalBackend, RunStorage
from ..storage.errors import ObjectNotFoundError

# metrics.jsonl key -> (plot title, y label); plotted in this order when present.
TRAINING_SERIES = {
    "reward": ("Reward (mean, ±std)", "reward"),
    "semantic_entropy": ("Semantic entropy", "nats"),
    "filtered_fraction": ("Filtered prompts", "fraction"),
    "completion_length": ("Completion length", "tokens"),
    "tokens_per_second": ("Throughput", "tokens/s"),
}
_EVAL_KEY = re.compile(r"^eval/step-(\d+)\.json$")
SAMPLES_KEY = "samples.jsonl"
PLOTS_PREFIX = "plots/"
MAX_SAMPLES = 12
MAX_BAR_STEPS = 4


@dataclass
class ReportData:
    """Everything the report shows, read from a run folder (no plotting)."""

    run_uri: str
    metrics: list[dict[str, Any]] = field(default_factory=list)
    evals: dict[int, dict[str, Any]] = field(default_factory=dict)  # step -> eval/step-N.json
    samples: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # unreadable files, shown in the report

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one metrics.jsonl key, skipping lines without it (or null)."""
        pairs = [(int(m["step"]), float(m[key])) for m in self.metrics
                 if isinstance(m.get("step"), (int, float)) and isinstance(m.get(key), (int, float))]
        return [s for s, _ in pairs], [v for _, v in pairs]

    def eval_benchmarks(self) -> list[str]:
        names: dict[str, None] = {}
        for ev in self.evals.values():
            names.update(dict.fromkeys(ev.get("accuracy", {})))
        return list(names)

    def eval_series(self) -> dict[str, Any]:
        steps = sorted(self.evals)
        return {
            "steps": steps,
            "accuracy": {b: [self.evals[s].get("accuracy", {}).get(b) for s in steps] for b in self.eval_benchmarks()},
            "average": [self.evals[s].get("average") for s in steps],
        }

    def to_json(self) -> dict[str, Any]:
        training = {}
        for key in TRAINING_SERIES:
            steps, values = self.series(key)
            if steps:
                training[key] = {"steps": steps, "values": values}
        steps, std = self.series("reward_std")
        if steps:
            training["reward_std"] = {"steps": steps, "values": std}
        return {"run": self.run_uri, "training": training, "eval": self.eval_series()}


def read_report_data(run: RunStorage) -> ReportData:
    data = ReportData(run.uri)
    data.metrics = run.read_metrics()
    for key in run.list("eval/"):
        m = _EVAL_KEY.match(key)
        if not m:
            continue
        try:
            data.evals[int(m.group(1))] = run.read_json(key)
        except (ValueError, ObjectNotFoundError) as exc:
            data.problems.append(f"{run.uri_of(key)}: not readable as JSON ({exc})")
    try:
        lines = run.read_bytes(SAMPLES_KEY).decode().splitlines()
        data.samples = [json.loads(line) for line in lines if line.strip()]
    except ObjectNotFoundError:
        pass
    except ValueError as exc:
        data.problems.append(f"{run.uri_of(SAMPLES_KEY)}: not JSON Lines ({exc})")
    return data


# ------------------------------------------------------------------------------------------------
# plots (matplotlib's object API with the Agg canvas: no pyplot global state, no display)
# ------------------------------------------------------------------------------------------------


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def make_plots(data: ReportData) -> dict[str, bytes]:
    """name -> PNG bytes, for every series that has data."""
    plots: dict[str, bytes] = {}
    for key, (title, ylabel) in TRAINING_SERIES.items():
        steps, values = data.series(key)
        if not steps:
            continue
        fig, ax = _figure()
        ax.plot(steps, values, marker="o", markersize=3)
        if key == "reward":
            std_steps, std = data.series("reward_std")
            by_step = dict(zip(std_steps, std))
            band = [(s, v, by_step[s]) for s, v in zip(steps, values) if s in by_step]
            if band:
                ax.fill_between([b[0] for b in band], [b[1] - b[2] for b in band], [b[1] + b[2] for b in band], alpha=0.2)
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        ax.grid(alpha=0.3)
        plots[key] = _png(fig)
    series = data.eval_series()
    if series["steps"]:
        fig, ax = _figure()
        for bench, values in series["accuracy"].items():
            ax.plot(series["steps"], [v if v is not None else float("nan") for v in values], marker="o", label=bench)
        if len(series["accuracy"]) > 1:
            ax.plot(series["steps"], [v if v is not None else float("nan") for v in series["average"]],
                    color="black", linestyle="--", label="average")
        ax.set(title="Eval accuracy", xlabel="step", ylabel="accuracy", ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        plots["eval_accuracy"] = _png(fig)
        plots["eval_by_benchmark"] = _bar_plot(data)
    return plots


def _bar_plot(data: ReportData) -> bytes:
    """Base (the first evaluated step, normally 0) against the latest checkpoints, per benchmark."""
    steps = sorted(data.evals)
    steps = steps[:1] + steps[1:][-MAX_BAR_STEPS:]  # more bars than this are unreadable
    benches = data.eval_benchmarks()
    fig, ax = _figure()
    width = 0.8 / max(1, len(steps))
    for i, step in enumerate(steps):
        acc = data.evals[step].get("accuracy", {})
        label = f"step {step}" + (" (base)" if step == 0 else "")
        ax.bar([j + i * width for j in range(len(benches))], [acc.get(b) or 0.0 for b in benches], width, label=label)
    ax.set_xticks([j + width * (len(steps) - 1) / 2 for j in range(len(benches))], benches, rotation=20, fontsize="small")
    ax.set(title="Accuracy per benchmark", ylabel="accuracy", ylim=(0, 1))
    ax.legend(fontsize="small")
    return _png(fig)


# ------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:1rem}.plots figure{margin:0}
.plots img{max-width:100%;height:auto}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}.up{color:#17803d}.down{color:#b42318}
.sample{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem;margin:.75rem 0}
.completion{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:.85rem;background:#fafafa;padding:.4rem;margin:.3rem 0}
.badge{display:inline-block;border-radius:4px;padding:0 .4rem;color:#fff;font-size:.8rem;margin-right:.4rem}
.ok{color:#17803d}.bad{color:#b42318}.problems{color:#b42318}
"""
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) else "–"


def _eval_table(data: ReportData) -> str:
    steps = sorted(data.evals)
    if not steps:
        return "<p>No evaluation yet (eval/step-N.json).</p>"
    head = "".join(f"<th>step {s}{' (base)' if s == 0 else ''}</th>" for s in steps)
    delta_head = "<th>Δ last − first</th>" if len(steps) > 1 else ""
    rows = []
    for bench in data.eval_benchmarks() + ["average"]:
        values = [data.evals[s].get("average") if bench == "average" else data.evals[s].get("accuracy", {}).get(bench)
                  for s in steps]
        cells = "".join(f"<td>{_pct(v)}</td>" for v in values)
        if len(steps) > 1 and isinstance(values[0], (int, float)) and isinstance(values[-1], (int, float)):
            d = 100 * (values[-1] - values[0])
            cells += f'<td class="{"up" if d >= 0 else "down"}">{d:+.1f}</td>'
        elif len(steps) > 1:
            cells += "<td>–</td>"
        rows.append(f'<tr><th class="l">{_e(bench)}</th>{cells}</tr>')
    return f'<table><tr><th class="l">accuracy (%)</th>{head}{delta_head}</tr>{"".join(rows)}</table>'


def _completion_html(text: str, answer: Any, cluster: Any, correct: Any) -> str:
    badge = ""
    if isinstance(cluster, int):
        badge = f'<span class="badge" style="background:{_PALETTE[cluster % len(_PALETTE)]}">cluster {cluster}</span>'
    mark = "" if correct is None else (' <span class="ok">✓</span>' if correct else ' <span class="bad">✗</span>')
    return (f'<div>{badge}answer: <code>{_e(answer)}</code>{mark}'
            f'<div class="completion">{_e(text)}</div></div>')


def _samples_html(data: ReportData) -> str:
    parts = []
    if data.evals:
        step = max(data.evals)
        for bench, result in data.evals[step].get("benchmarks", {}).items():
            for record in result.get("records", [])[:3]:
                comps = "".join(_completion_html(c.get("text", ""), c.get("answer"), c.get("cluster"), c.get("correct"))
                                for c in record.get("completions", []))
                parts.append(f'<div class="sample"><b>{_e(bench)}</b> #{_e(record.get("index"))} (step {step}) — gold '
                             f'<code>{_e(", ".join(map(str, record.get("gold", []))))}</code><p>{_e(record.get("question", ""))}</p>{comps}</div>')
    for sample in data.samples[-MAX_SAMPLES:]:
        comps = sample.get("completions", [])
        answers, clusters = sample.get("answers") or [], sample.get("clusters") or []
        rendered = []
        for i, c in enumerate(comps):
            if isinstance(c, dict):
                rendered.append(_completion_html(c.get("text", ""), c.get("answer"), c.get("cluster"), c.get("correct")))
            else:
                rendered.append(_completion_html(c, answers[i] if i < len(answers) else None,
                                                 clusters[i] if i < len(clusters) else None, None))
        rewards = sample.get("rewards")
        extra = f" — rewards {_e(', '.join(f'{r:.2f}' for r in rewards))}" if isinstance(rewards, list) else ""
        parts.append(f'<div class="sample"><b>training</b> step {_e(sample.get("step", "?"))}{extra}'
                     f'<p>{_e(sample.get("question", ""))}</p>{"".join(rendered)}</div>')
    return "".join(parts) or "<p>No samples (eval records or samples.jsonl).</p>"


def render_html(data: ReportData, plots: dict[str, bytes]) -> str:
    # Equal grid cells, and each image at most its own pixel size: a plot alone on the last row
    # used to stretch to the full page width (a flexbox item grows into the free space).
    figures = "".join(
        f'<figure><img alt="{_e(name)}" width="{w}" height="{h}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}"></figure>'
        for name, png in plots.items() for w, h in [_png_size(png)])
    last = data.metrics[-1] if data.metrics else {}
    facts = ", ".join(f"{k} {last[k]:.4g}" for k in ("reward", "semantic_entropy", "filtered_fraction")
                      if isinstance(last.get(k), (int, float)))
    problems = "".join(f"<li>{_e(p)}</li>" for p in data.problems)
    # '</' inside the data island would end the <script> element early.
    island = json.dumps(data.to_json(), allow_nan=False, default=str).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>EMPO run report: {_e(data.run_uri)}</title>
<style>{_CSS}</style></head><body>
<h1>EMPO run report</h1>
<p>Run <code>{_e(data.run_uri)}</code>: {len(data.metrics)} logged steps{f" (last step {_e(last.get('step'))}: {_e(facts)})" if last else ""},
{len(data.evals)} evaluations.</p>
{f'<ul class="problems">{problems}</ul>' if problems else ""}
<h2>Curves</h2><div class="plots">{figures or "<p>No metrics yet.</p>"}</div>
<h2>Evaluation: base against checkpoints</h2>{_eval_table(data)}
<h2>Sample completions and their answer clusters</h2>{_samples_html(data)}
<script type="application/json" id="empo-report-data">{island}</script>
</body></html>
"""


# ------------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------------


def open_run(source: str | Path | RunStorage, *, endpoint: str | None = None, region: str | None = None) -> RunStorage:
    """A run folder given as RunStorage, a local path or an s3:// run URI."""
    if isinstance(source, RunStorage):
        return source
    text = str(source)
    if Uri.parse(text).is_s3:
        from ..storage import S3Backend, S3Options
        from ..storage.layout import StorageLocation

        return RunStorage(S3Backend(StorageLocation.parse(text), endpoint, region, S3Options()))
    path = Path(text).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {text!r} does not exist; give a local run folder or an s3:// run URI")
    return RunStorage(LocalBackend(path))


def write_report(run_dir_or_storage: str | Path | RunStorage, out_path: str | Path | None = None, *,
                 publish: bool | None = None, endpoint: str | None = None) -> Path:
    """Write report.html and plots/*.png; return the HTML's local path.

    out_path None: the run's own report.html (a local run folder), or a temporary folder for a
    remote run. publish (default: when out_path is None) also stores report.html and plots/ in the
    run folder, where status.lastEval.reportURI points.
    """
    run = open_run(run_dir_or_storage, endpoint=endpoint)
    if publish is None:
        publish = out_path is None
    if out_path is None:
        local_root = getattr(run.backend, "root", None)
        out_path = Path(local_root) / "report.html" if local_root else Path(tempfile.mkdtemp(prefix="empo-report-")) / "report.html"
    out_path = Path(out_path)
    data = read_report_data(run)
    plots = make_plots(data)
    html_text = render_html(data, plots)
    plot_dir = out_path.parent / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, png in plots.items():
        (plot_dir / f"{name}.png").write_bytes(png)
    out_path.write_text(html_text, encoding="utf-8")
    if publish:
        local_same = getattr(run.backend, "root", None) == out_path.parent.resolve()
        if not local_same:
            for name, png in plots.items():
                run.write_bytes(f"{PLOTS_PREFIX}{name}.png", png)
            run.write_report(html_text)
    return out_path
