"""The frozen teachers of a Distiller: reading and checking their entries in
``MODEL.DISTILL.TEACHERS``, building each from its own config and weights, and
lining up its heatmap channels with the student's classes (:class:`TeacherLink`)."""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from ...checkpoint import StrictCheckpointer, UnsafeWeightsError, local_weights_path
from ...config import ConfigValueError, add_centerx_config, merge_config_file
from .build import detector_class
from .point_detector import PointDetector

__all__ = [
    "TeacherLink",
    "build_teachers",
    "class_names",
    "check_disjoint",
    "check_same_grid",
    "load_teacher_weights",
    "map_classes",
    "parse_teacher_entry",
    "teacher_config",
]

logger = logging.getLogger(__name__)

_SWAPPABLE_FORMATS = {"RGB", "BGR"}


@dataclass(frozen=True)
class TeacherLink:
    """How one teacher's outputs line up with the student's.

    Attributes:
        name: "t<i>", used in the loss names (``loss_kd_t0_heatmap``).
        student_classes: student heatmap channel taught by each taught teacher channel.
        teacher_channels: the taught teacher heatmap channels, same order.
        swap_channels: the teacher reads images in the other of RGB / BGR.
        own_normalization: the teacher needs its own input tensor (other channel
            order or pixel mean / std than the student's).
    """

    name: str
    student_classes: tuple[int, ...]
    teacher_channels: tuple[int, ...]
    swap_channels: bool
    own_normalization: bool


def build_teachers(
    cfg, student: PointDetector, entries: Sequence[tuple], tcfgs: Sequence
) -> tuple[list[PointDetector], list[TeacherLink]]:
    """Each teacher built from its config, checked against the student's grid, its
    weights loaded strictly, and its :class:`TeacherLink`.

    Args:
        cfg: the Distiller's config (the student's input format and normalisation).
        student: the student detector.
        entries: (config file, local weights file, classes) per teacher (:func:`parse_teacher_entry`).
        tcfgs: each teacher's config (:func:`teacher_config`).
    """
    student_names = class_names(cfg)
    teachers, links = [], []
    for i, ((config_file, weights_file, classes), tcfg) in enumerate(zip(entries, tcfgs)):
        teacher = build_model(tcfg)
        check_same_grid(i, config_file, student, teacher)
        load_teacher_weights(i, teacher, weights_file)
        student_classes, channels = map_classes(
            i, classes, teacher.num_classes, class_names(tcfg), student.num_classes, student_names
        )
        swap = cfg.INPUT.FORMAT != tcfg.INPUT.FORMAT
        own = (
            swap
            or list(cfg.MODEL.PIXEL_MEAN) != list(tcfg.MODEL.PIXEL_MEAN)
            or list(cfg.MODEL.PIXEL_STD) != list(tcfg.MODEL.PIXEL_STD)
        )
        links.append(TeacherLink(f"t{i}", tuple(student_classes), tuple(channels), swap, own))
        teachers.append(teacher)
        logger.info(
            f"Distillation teacher t{i}: {tcfg.MODEL.META_ARCHITECTURE} from {config_file} with "
            f"weights {weights_file}; teacher channel -> student class: "
            f"{dict(zip(channels, student_classes))}" + ("; own input channel order / normalisation" if own else "")
        )
    check_disjoint(links, student_names)
    return teachers, links


def parse_teacher_entry(i: int, entry) -> tuple[str, str, tuple]:
    """(config file, local weights file, classes) of one teacher, checked before any
    model is built: both files exist (weights may be a URL, fetched here); the
    classes are all names or all indices, none twice."""
    where = f"MODEL.DISTILL.TEACHERS[{i}]"
    if isinstance(entry, (str, bytes)) or len(entry) != 3:
        raise ConfigValueError(f"{where} must be a (config file, weights file, classes) triple, got {entry!r}.")
    config_file, weights_file, classes = entry
    classes = (classes,) if isinstance(classes, (str, int)) else tuple(classes)
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{where}: config file '{config_file}' does not exist.")
    weights_file = local_weights_path(weights_file, where)  # a local file, or a URL fetched into the cache
    if len(set(classes)) != len(classes):
        raise ConfigValueError(f"{where}: classes {list(classes)} list a class twice.")
    names = all(isinstance(c, str) for c in classes)
    indices = all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
    if not (names or indices):
        raise ConfigValueError(f"{where}: classes {list(classes)} must be all names or all student class indices.")
    return config_file, weights_file, classes


def teacher_config(i: int, config_file: str, cfg):
    """The teacher's own config, on the student's device, without ImageNet
    initialisation (its weights file replaces every parameter).

    Refuses, with the reason, a teacher config that cannot teach this student:
    a Distiller config, another meta-architecture, or an input that cannot be
    converted (channel orders other than RGB <-> BGR, another channel count).
    Other pixel mean / std and RGB vs BGR are handled by giving the teacher its
    own input."""

    where = f"MODEL.DISTILL.TEACHERS[{i}] ('{config_file}')"
    try:
        tcfg = merge_config_file(add_centerx_config(get_cfg()), config_file)
    except ValueError as e:
        raise ConfigValueError(f"{where}: {e}") from None
    if tcfg.MODEL.META_ARCHITECTURE == "Distiller":
        raise ConfigValueError(f"{where}: is a Distiller config; give the plain config of the trained teacher.")
    if tcfg.MODEL.META_ARCHITECTURE != cfg.MODEL.DISTILL.STUDENT_META_ARCHITECTURE:
        raise ConfigValueError(
            f"{where}: the teacher is a {tcfg.MODEL.META_ARCHITECTURE}, the student a "
            f"{cfg.MODEL.DISTILL.STUDENT_META_ARCHITECTURE}; distillation compares their heads one by "
            "one and needs the same meta-architecture."
        )
    formats = {cfg.INPUT.FORMAT, tcfg.INPUT.FORMAT}
    if len(formats) > 1 and not formats <= _SWAPPABLE_FORMATS:
        raise ConfigValueError(
            f"{where}: INPUT.FORMAT '{tcfg.INPUT.FORMAT}' vs the student's '{cfg.INPUT.FORMAT}'; "
            f"only {sorted(_SWAPPABLE_FORMATS)} can be converted into each other."
        )
    for key in ("PIXEL_MEAN", "PIXEL_STD"):
        if len(tcfg.MODEL[key]) != len(cfg.MODEL[key]):
            raise ConfigValueError(
                f"{where}: MODEL.{key} has {len(tcfg.MODEL[key])} channels, the student's {len(cfg.MODEL[key])}."
            )
    tcfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    tcfg.MODEL.CENTERX.BACKBONE_WEIGHTS = ""
    tcfg.freeze()
    return tcfg


def check_same_grid(i: int, config_file: str, student: PointDetector, teacher: PointDetector) -> None:
    """Refuse, with the reason, a teacher whose maps cannot be compared cell by
    cell with the student's (another output stride or input padding)."""
    where = f"MODEL.DISTILL.TEACHERS[{i}] ('{config_file}')"
    if teacher.stride != student.stride:
        raise ConfigValueError(
            f"{where}: output stride {teacher.stride} differs from the student's {student.stride}; "
            "distillation compares the maps cell by cell."
        )
    if teacher.backbone.size_divisibility != student.backbone.size_divisibility:
        raise ConfigValueError(
            f"{where}: pads inputs to a multiple of {teacher.backbone.size_divisibility}, the student "
            f"to {student.backbone.size_divisibility}; their maps would differ in size."
        )


def load_teacher_weights(i: int, teacher: PointDetector, weights_file: str) -> None:
    try:
        StrictCheckpointer(teacher).load(weights_file)
    except (ValueError, UnsafeWeightsError) as e:
        raise ConfigValueError(f"MODEL.DISTILL.TEACHERS[{i}]: '{weights_file}': {e}") from e


def class_names(cfg) -> list[str] | None:
    """Names of a config's model classes in heatmap channel order:
    MODEL.CENTERX.CLASS_NAMES when set, else the first ``thing_classes`` in the
    metadata of DATASETS.TEST then TRAIN that has as many names as the model has
    classes (a dataset of another class count names other classes), else None.
    Metadata only: no dataset is registered or loaded here."""
    if cfg.MODEL.CENTERX.CLASS_NAMES:
        return list(cfg.MODEL.CENTERX.CLASS_NAMES)
    detector = detector_class(cfg)
    count = detector.config_node(cfg).NUM_CLASSES if detector is not None and detector.has_config(cfg) else None
    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        names = MetadataCatalog.get(name).get("thing_classes") if name in MetadataCatalog.list() else None
        if names is not None and (count is None or len(names) == count):
            return list(names)
    return None


def map_classes(
    i: int,
    classes: tuple,
    teacher_num: int,
    teacher_names: list[str] | None,
    student_num: int,
    student_names: list[str] | None,
) -> tuple[list[int], list[int]]:
    """(student class of each taught teacher channel, taught teacher channels).

    ``classes`` are all names or all student indices (see :func:`parse_teacher_entry`)."""
    where = f"MODEL.DISTILL.TEACHERS[{i}]"
    if not classes:
        if teacher_names is not None and student_names is not None:
            classes = tuple(teacher_names)
        elif teacher_num == student_num:
            logger.warning(f"{where}: no class names on one side; teacher channel i teaches student class i.")
            return list(range(teacher_num)), list(range(teacher_num))
        else:
            raise ConfigValueError(
                f"{where}: the teacher has {teacher_num} classes, the student {student_num}, and the "
                "class names are unknown; give the student classes it teaches as indices."
            )
    if all(isinstance(c, str) for c in classes):
        t_names = _names_or_raise(f"{where}: classes are given by name but the teacher's", teacher_names, teacher_num)
        s_names = _names_or_raise(f"{where}: classes are given by name but the student's", student_names, student_num)
        for c in classes:
            if c not in s_names:
                raise ConfigValueError(
                    f"{where}: teaches class '{c}', which the student does not have (student classes: {s_names})."
                )
            if c not in t_names:
                raise ConfigValueError(f"{where}: class '{c}' is not one of the teacher's classes {t_names}.")
        return [s_names.index(c) for c in classes], [t_names.index(c) for c in classes]
    if len(classes) != teacher_num:
        raise ConfigValueError(
            f"{where}: classes given as student indices {list(classes)} must name one student "
            f"class per teacher channel ({teacher_num})."
        )
    bad = [c for c in classes if not 0 <= c < student_num]
    if bad:
        raise ConfigValueError(
            f"{where}: teaches student class indices {bad}, which the student (classes 0.."
            f"{student_num - 1}) does not have."
        )
    return list(classes), list(range(teacher_num))


def _names_or_raise(what: str, names: list[str] | None, num: int) -> list[str]:
    if names is None:
        raise ConfigValueError(
            f"{what} config sets no MODEL.CENTERX.CLASS_NAMES and the metadata of its datasets "
            "(DATASETS.TEST / TRAIN) has no thing_classes (a COCO json dataset's are known only once "
            "it is read); set MODEL.CENTERX.CLASS_NAMES, or give student class indices instead."
        )
    if len(names) != num:
        raise ConfigValueError(
            f"{what} class names {names} number {len(names)} while its model has {num} classes; "
            "fix MODEL.CENTERX.CLASS_NAMES or its datasets' thing_classes."
        )
    return names


def check_disjoint(links: Sequence[TeacherLink], student_names: list[str] | None) -> None:
    owner: dict[int, str] = {}
    for i, link in enumerate(links):
        for c in link.student_classes:
            if c in owner:
                label = (
                    f"'{student_names[c]}' ({c})" if student_names is not None and c < len(student_names) else str(c)
                )
                raise ConfigValueError(
                    f"MODEL.DISTILL.TEACHERS[{owner[c]}] and [{i}] both teach student class {label}; "
                    "each class must have one teacher."
                )
            owner[c] = str(i)
