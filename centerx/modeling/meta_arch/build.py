"""Which detector a config describes, beside detectron2's ``meta_arch/build.py``:
the point detector ``MODEL.META_ARCHITECTURE`` names, or, for a meta-architecture
that trains one (``trains_student``: the Distiller), its student, named by
``MODEL.DISTILL.STUDENT_META_ARCHITECTURE``. Data checks, deployment and the
scripts ask these instead of naming the Distiller."""

from detectron2.modeling import META_ARCH_REGISTRY

from .point_detector import PointDetector

__all__ = ["detector_class", "detector_config", "student_config", "trains_student"]


def trains_student(cfg) -> bool:
    """Whether ``MODEL.META_ARCHITECTURE`` trains a student detector (its class says
    so with ``trains_student = True``) rather than being the detector itself."""
    name = cfg.MODEL.META_ARCHITECTURE
    return name in META_ARCH_REGISTRY and bool(getattr(META_ARCH_REGISTRY.get(name), "trains_student", False))


def student_config(cfg):
    """The plain student config a ``Distiller`` config describes: its checkpoints
    load into it, and it evaluates and exports them. Loss balancing is left to
    the distiller, which applies it once to the student's and the teachers' terms."""
    student_cfg = cfg.clone()
    student_cfg.defrost()
    student_cfg.MODEL.META_ARCHITECTURE = cfg.MODEL.DISTILL.STUDENT_META_ARCHITECTURE
    student_cfg.MODEL.LOSS_BALANCE.ENABLED = False
    student_cfg.freeze()
    return student_cfg


def detector_config(cfg):
    """The config of the detector that is evaluated and deployed: a Distiller's
    student's (:func:`student_config`), else ``cfg`` itself."""
    return student_config(cfg) if trains_student(cfg) else cfg


def detector_class(cfg) -> type | None:
    """The point detector class a config trains, evaluates and exports (a
    Distiller's student), or None when MODEL.META_ARCHITECTURE is not a point detector."""
    name = cfg.MODEL.DISTILL.STUDENT_META_ARCHITECTURE if trains_student(cfg) else cfg.MODEL.META_ARCHITECTURE
    cls = META_ARCH_REGISTRY.get(name) if name in META_ARCH_REGISTRY else None
    return cls if isinstance(cls, type) and issubclass(cls, PointDetector) else None
