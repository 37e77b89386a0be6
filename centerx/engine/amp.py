"""Mixed-precision training steps: detectron2's ``AMPTrainer`` (float16) on CUDA,
bfloat16 autocast on CPUs that compute in bfloat16 natively."""

import logging
import time
from collections.abc import Sequence

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer

from ..config import ConfigValueError
from ..modeling.meta_arch.distiller import Distiller

logger = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX),
    where oneDNN's bfloat16 convolutions are faster than float32 ones. Elsewhere
    bfloat16 is emulated and slower, so autocast is not worth it."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


class CPUAutocastTrainer(SimpleTrainer):
    """:class:`SimpleTrainer` whose forward (the model's losses included) runs
    under ``torch.autocast("cpu", bfloat16)``: convolutions and matrix products
    in bfloat16, everything else (BatchNorm statistics, the losses, which
    centerX computes in float32, the weights and the optimizer) in float32.
    bfloat16 has float32's exponent range, so no gradient scaler is needed.
    """

    def __init__(self, model, data_loader, optimizer, precision: torch.dtype = torch.bfloat16):
        super().__init__(model, data_loader, optimizer)
        self.precision = precision

    def run_step(self):
        assert self.model.training, "[CPUAutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast("cpu", dtype=self.precision):
            loss_dict = self.model(data)
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


def _floats(value, dtype=torch.float32):
    if torch.is_tensor(value) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_floats(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _floats(v, dtype) for k, v in value.items()}
    return value


def _autocast_off(module, args, kwargs):
    device = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
    context = torch.autocast(device_type=device, enabled=False)
    context.__enter__()
    module._centerx_autocast_off.append(context)
    return _floats(args), _floats(kwargs)


def _autocast_back(module, args, kwargs, output):
    module._centerx_autocast_off.pop().__exit__(None, None, None)


def keep_in_float32(model: torch.nn.Module, names: Sequence[str]) -> list[str]:
    """Run the submodules ``names`` of ``model`` (as ``named_modules`` names them,
    e.g. "heads", "heads.heatmap", "upsampler") in float32 under autocast: their
    floating-point inputs are cast to float32 and autocast is off inside them
    (forward hooks; the parameters and the state dict are unchanged). Returns the
    names. Unknown names are refused, listing the model's top-level parts."""
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules or not n]
    if unknown:
        parts = [n for n, _ in model.named_children()]
        raise ConfigValueError(
            f"SOLVER.AMP.FP32_MODULES: {unknown} are not submodules of {type(model).__name__}; its parts "
            f"are {parts} (deeper names like 'heads.heatmap' work too). A config written for another "
            "detector (the TTFNet demos keep 'heads.ltrb' in float32) needs its own list: e.g. "
            'SOLVER.AMP.FP32_MODULES "(\'heads\',)", or "()" for none.'
        )
    for name in names:
        run_in_float32(modules[name])
    return list(names)


def run_in_float32(module: torch.nn.Module) -> None:
    """Run ``module`` in float32 under autocast: its floating-point inputs cast to
    float32, autocast off inside it (forward hooks; parameters unchanged)."""
    module._centerx_autocast_off = []
    module.register_forward_pre_hook(_autocast_off, with_kwargs=True)
    module.register_forward_hook(_autocast_back, with_kwargs=True, always_call=True)


def keep_teachers_precision(distiller: Distiller) -> None:
    """Each teacher of ``distiller`` runs under the student's autocast in the precision its
    own config trains in: the modules its SOLVER.AMP.FP32_MODULES names in float32
    (``Distiller.teacher_fp32_modules``; a teacher whose config trains without AMP runs
    with autocast off, see ``Distiller.teacher_predictions``)."""
    for link, teacher, names in zip(distiller.links, distiller.teachers, distiller.teacher_fp32_modules):
        if names is None:
            logger.info(f"Mixed precision: teacher {link.name} runs in float32 (its config trains without AMP).")
        elif names:
            keep_in_float32(teacher, names)
            logger.info(f"Mixed precision: teacher {link.name} keeps {', '.join(names)} in float32 (its config).")


def build_step_trainer(cfg, model, data_loader, optimizer) -> SimpleTrainer:
    """The training-step runner ``SOLVER.AMP.ENABLED`` and ``MODEL.DEVICE`` call for.

    - AMP off: detectron2's ``SimpleTrainer`` (float32).
    - AMP on, CUDA: detectron2's ``AMPTrainer`` (float16 autocast + gradient scaler).
    - AMP on, CPU with native bfloat16 (:func:`cpu_has_native_bf16`):
      :class:`CPUAutocastTrainer`; on another CPU a warning, then float32.

    With AMP on, the modules SOLVER.AMP.FP32_MODULES names (in the detector; a
    :class:`Distiller`'s student) run in float32 (:func:`keep_in_float32`), and a
    Distiller's teachers in their own configs' precision (:func:`keep_teachers_precision`).
    """
    if not cfg.SOLVER.AMP.ENABLED:
        return SimpleTrainer(model, data_loader, optimizer)
    unwrapped = model.module if hasattr(model, "module") else model
    if isinstance(unwrapped, Distiller):  # its weights, and so its module names, are the student's
        keep_teachers_precision(unwrapped)
        unwrapped = unwrapped.student
    if len(cfg.SOLVER.AMP.FP32_MODULES):
        logger.info(
            f"Mixed precision: {', '.join(keep_in_float32(unwrapped, cfg.SOLVER.AMP.FP32_MODULES))} kept in "
            "float32 (SOLVER.AMP.FP32_MODULES)."
        )
    if torch.device(cfg.MODEL.DEVICE).type == "cuda":
        return AMPTrainer(model, data_loader, optimizer)
    if cpu_has_native_bf16():
        logger.info("SOLVER.AMP.ENABLED on CPU: training under bfloat16 autocast (this CPU has native bfloat16).")
        return CPUAutocastTrainer(model, data_loader, optimizer)
    logger.warning(
        "SOLVER.AMP.ENABLED on a CPU without native bfloat16 (no AVX-512 BF16 / AMX): bfloat16 would be "
        "emulated and slower, so training runs in float32. Set SOLVER.AMP.ENABLED False to silence this."
    )
    return SimpleTrainer(model, data_loader, optimizer)
