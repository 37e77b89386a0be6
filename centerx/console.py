"""What a training run shows on screen: a summary line, one progress line per
logging period, evaluation results, warnings and errors. Everything else
(environment, full config, dataset tables, detectron2's metric lines) still
goes to ``OUTPUT_DIR/log.txt``."""

import datetime
import logging
import sys
from collections.abc import Iterable

from detectron2.utils.events import EventWriter, get_event_storage

# loggers whose console handlers (made by detectron2's setup_logger) are filtered
CONSOLE_LOGGERS = ("detectron2", "fvcore", "centerx")
# INFO records of these loggers stay on screen: inference progress and the AP tables
SHOWN_LOGGERS = ("detectron2.evaluation.evaluator", "detectron2.evaluation.coco_evaluation")
# of those, records starting with these are not results and go to the log file only
HIDDEN_PREFIXES = (
    "Preparing results",
    "Saving results",
    "Evaluating predictions",
    "Total inference pure",
    "Fast COCO eval is not built",
)
SHOW = "console"  # ``logger.info(..., extra={SHOW: True})`` puts a record on screen


class ConsoleFilter(logging.Filter):
    """Lets through warnings and errors, records logged with ``extra={"console": True}``,
    and the evaluation's progress and result tables."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or getattr(record, SHOW, False):
            return True
        if record.name.startswith(SHOWN_LOGGERS):
            return not str(record.msg).startswith(HIDDEN_PREFIXES)
        return False


def _console_handlers(logger: logging.Logger) -> Iterable[logging.Handler]:
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (sys.stdout, sys.stderr):
            yield handler


def quiet_console(names: Iterable[str] = CONSOLE_LOGGERS) -> None:
    """Put :class:`ConsoleFilter` on the screen handlers of the loggers ``names``
    (file handlers keep every record). Idempotent."""
    for name in names:
        for handler in _console_handlers(logging.getLogger(name)):
            if not any(isinstance(f, ConsoleFilter) for f in handler.filters):
                handler.addFilter(ConsoleFilter())


def on_screen(logger: logging.Logger, message: str) -> None:
    """Log ``message`` at INFO so that it shows on a quiet console too."""
    logger.info(message, extra={SHOW: True})


class ProgressPrinter(EventWriter):
    """One console line per logging period::

        iter 120/1000 (12%)  eta 0:12:03  loss 3.21 (heatmap 1.90, box 1.31)  lr 1.9e-03  18.8 img/s

    Losses are the medians of the last ``window`` iterations (detectron2's
    console smoothing), the ETA the median iteration time (detectron2's "time"
    history, data loading included) times the iterations left, images/s the
    batch over that median time."""

    def __init__(self, max_iter: int, batch_size: int, window: int = 20):
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.window = window
        self.logger = logging.getLogger("centerx.progress")

    def write(self):
        storage = get_event_storage()
        iteration = storage.iter
        if iteration >= self.max_iter:
            return
        histories = storage.histories()
        parts = [f"iter {iteration + 1}/{self.max_iter} ({100 * (iteration + 1) // self.max_iter}%)"]
        if "time" in histories:
            step = histories["time"].median(self.window)
            eta = datetime.timedelta(seconds=int(step * (self.max_iter - iteration - 1)))
            parts.append(f"eta {eta}")
        terms = [(k, h.median(self.window)) for k, h in histories.items() if k.startswith("loss_")]
        if "total_loss" in histories:
            detail = ", ".join(f"{k[len('loss_') :]} {v:.3g}" for k, v in terms)
            parts.append(f"loss {histories['total_loss'].median(self.window):.3g}" + (f" ({detail})" if detail else ""))
        if "lr" in histories:
            parts.append(f"lr {histories['lr'].latest():.2g}")
        if "time" in histories:
            parts.append(f"{self.batch_size / max(step, 1e-9):.1f} img/s")
        on_screen(self.logger, "  ".join(parts))
