"""What a training run leaves in OUTPUT_DIR for a user to open: ``results.csv``
(losses, learning rate, speed and evaluation metrics over iterations), plots of
them under ``plots/``, the best weights by the evaluation metric
(``model_best.pth``) and the final weights without optimizer state
(``model_final_weights.pth``)."""

import csv
import io
import logging
import math
import os

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..console import on_screen
from .checkpoint import _atomic_write

logger = logging.getLogger(__name__)

RESULTS_CSV = "results.csv"
PLOTS_DIR = "plots"
BEST_WEIGHTS = "model_best.pth"
FINAL_WEIGHTS = "model_final_weights.pth"
EVAL_PREFIX = "bbox/"


def read_results(path: str) -> list[dict[str, float]]:
    """The rows of a ``results.csv`` (empty cells left out), as floats."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _columns(rows: list[dict[str, float]]) -> list[str]:
    seen = dict.fromkeys(["iteration"])
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _csv_text(rows: list[dict[str, float]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_columns(rows), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (int(v) if k == "iteration" else f"{v:.6g}") for k, v in row.items()})
    return out.getvalue()


def plot_results(rows: list[dict[str, float]], out_dir: str) -> list[str]:
    """``losses.png``, ``lr.png`` and (when there are evaluations) ``ap.png`` of
    the ``results.csv`` rows in ``out_dir``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    columns = _columns(rows)
    panels = [
        ("losses.png", "loss (median over the logging period)", [c for c in columns if "loss" in c], True),
        ("lr.png", "learning rate", ["lr"], False),
        (
            "ap.png",
            "COCO AP on DATASETS.TEST (%)",
            [c for c in (f"{EVAL_PREFIX}AP", f"{EVAL_PREFIX}AP50", f"{EVAL_PREFIX}AP75") if c in columns],
            False,
        ),
    ]
    written = []
    for name, title, keys, log_scale in panels:
        series = [(k, [(r["iteration"], r[k]) for r in rows if k in r and math.isfinite(r[k])]) for k in keys]
        series = [(k, points) for k, points in series if points]
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        for key, points in series:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, label=key)
        if log_scale and all(y > 0 for _, points in series for _, y in points):
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


class RunReport(HookBase):
    """Writes, in the main process, ``results.csv`` (a row every ``period``
    iterations: losses as medians of the period, learning rate, seconds per
    iteration, images/s; and a row at each evaluation with its ``bbox/*``
    metrics), the plots of :func:`plot_results`, ``model_best.pth`` after each
    evaluation that improves ``metric`` (the weights evaluated, EMA's when it
    is evaluated, without optimizer state) and ``model_final_weights.pth`` at
    the end of a completed run. A resumed run keeps the rows of the iterations
    it does not repeat. Register after the evaluation hook."""

    def __init__(self, output_dir: str, period: int, batch_size: int, metric: str = "bbox/AP"):
        self.output_dir = output_dir
        self.period = max(1, period)
        self.batch_size = batch_size
        self.metric = metric
        self.rows: list[dict[str, float]] = []
        self.best: float | None = None
        self._last_eval_iter = -1

    @property
    def csv_path(self) -> str:
        return os.path.join(self.output_dir, RESULTS_CSV)

    def before_train(self):
        start = self.trainer.start_iter
        if not comm.is_main_process() or not os.path.isfile(self.csv_path) or start == 0:
            return
        self.rows = [r for r in read_results(self.csv_path) if r.get("iteration", math.inf) <= start]
        scores = [r[self.metric] for r in self.rows if self.metric in r]
        self.best = max(scores) if scores else None

    def _training_row(self, iteration: int) -> dict[str, float]:
        """Medians of the last period after ``iteration`` completed iterations."""
        histories = self.trainer.storage.histories()
        row = {"iteration": iteration}
        for key, history in histories.items():
            if "loss" in key:
                row[key] = history.median(self.period)
        if "lr" in histories:
            row["lr"] = histories["lr"].latest()
        if "time" in histories:
            step = histories["time"].median(self.period)
            row["s_per_iter"] = step
            row["images_per_s"] = self.batch_size / max(step, 1e-9)
        return row

    def _new_evaluation(self) -> dict[str, float]:
        latest = self.trainer.storage.latest()
        found = {k: v for k, (v, it) in latest.items() if k.startswith(EVAL_PREFIX) and it > self._last_eval_iter}
        if found:
            self._last_eval_iter = max(it for k, (_, it) in latest.items() if k.startswith(EVAL_PREFIX))
        return found

    def after_step(self):
        if not comm.is_main_process():
            return
        iteration = self.trainer.iter + 1
        evaluation = self._new_evaluation()
        if iteration % self.period and not evaluation:
            return
        row = self._training_row(iteration)
        row.update(evaluation)
        self.rows.append(row)
        self._write(evaluation)

    def after_train(self):
        if not comm.is_main_process():
            return
        evaluation = self._new_evaluation()
        row = self._training_row(self.trainer.iter)  # after the loop: the iterations completed
        if self.rows and self.rows[-1]["iteration"] == row["iteration"]:
            self.rows[-1].update(evaluation)
        else:
            row.update(evaluation)
            self.rows.append(row)
        if self.trainer.iter >= self.trainer.max_iter:
            self._save_weights(FINAL_WEIGHTS)
        self._write(evaluation)
        plots = plot_results(self.rows, os.path.join(self.output_dir, PLOTS_DIR))
        kept = [os.path.join(self.output_dir, f) for f in (BEST_WEIGHTS, FINAL_WEIGHTS)]
        shown = [self.csv_path] + plots + [f for f in kept if os.path.isfile(f)]
        on_screen(logger, "Run report: " + ", ".join(shown))

    def _write(self, evaluation: dict[str, float]) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        text = _csv_text(self.rows)
        _atomic_write(self.csv_path, lambda f: f.write(text.encode()))
        if not evaluation:
            return
        plot_results(self.rows, os.path.join(self.output_dir, PLOTS_DIR))
        score = evaluation.get(self.metric)
        if score is not None and math.isfinite(score) and (self.best is None or score > self.best):
            self.best = score
            self._save_weights(BEST_WEIGHTS, {self.metric: score})

    def _save_weights(self, name: str, extra: dict[str, float] | None = None) -> None:
        with self.trainer.eval_weights():
            weights = {k: v.detach().cpu().clone() for k, v in self.trainer.unwrapped_model.state_dict().items()}
        data = {
            "model": weights,
            "iteration": self.rows[-1]["iteration"] if self.rows else self.trainer.iter,
            **(extra or {}),
        }
        _atomic_write(os.path.join(self.output_dir, name), lambda f: torch.save(data, f))
