"""Multi-teacher knowledge distillation as a detectron2 meta-architecture (docs/distillation.md).

``MODEL.META_ARCHITECTURE: "Distiller"`` wraps a student (any of our point
detectors, named by ``MODEL.DISTILL.STUDENT_META_ARCHITECTURE``; the rest of the
config describes it) and one or more frozen teachers, each built from its own
config file and weights file and teaching a set of the student's classes:
output-map (logit) distillation (``MODEL.DISTILL.LOGIT_KD``) and / or
adversarial feature distillation (``MODEL.DISTILL.ADVERSARIAL``,
:mod:`centerx.modeling.adversarial`).
"""

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch import nn

from ...config import ConfigValueError
from ..adversarial import FeatureAdversaries
from ..distillation_terms import build_distillation_terms, heatmap_distillation_loss
from ..loss_balance import LossBalancer, build_loss_balancer
from .build import student_config
from .point_detector import PointDetector
from .teachers import TeacherLink, build_teachers, parse_teacher_entry, teacher_config

__all__ = ["Distiller"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class Distiller(nn.Module):
    """Student trained to match frozen teachers' output maps and / or to make its
    feature maps indistinguishable from theirs, with or without labels.

    Training input: detectron2 dicts as for the student. With labels, the
    student's own losses are computed on the images that have them (dicts
    without ``"unlabeled": True``, see ``DATASETS.IMAGE_FOLDERS``) and the
    distillation losses on every image; label-free, only the latter. Output:
    the loss dict, with ``loss_kd_<teacher>_<head>`` terms (e.g.
    ``loss_kd_t0_heatmap``, ``loss_kd_t1_wh``) weighted by
    ``weight * head_weights[head]`` (unless ``logit_kd`` is off), the
    adversarial ``loss_adv_<teacher>_<level>`` terms (e.g.
    ``loss_adv_t0_upsampler``) when ``adversarial`` is given, then loss
    balancing when configured.

    Inference: exactly the student's.

    Teachers stay in eval mode with ``requires_grad=False`` (detectron2's
    optimizer builders skip them) and run under ``no_grad``. ``state_dict`` and
    ``load_state_dict`` are the student's, so checkpoints hold only the student
    and load into :func:`student_config`; the adversarial adapters and
    discriminators (``self.adversarial``) are training state the trainer
    checkpoints on its own.
    """

    # it trains the student named by MODEL.DISTILL.STUDENT_META_ARCHITECTURE (centerx.modeling.meta_arch.build)
    trains_student = True

    @configurable
    def __init__(
        self,
        *,
        student: PointDetector,
        teachers: Sequence[PointDetector],
        links: Sequence[TeacherLink],
        use_labels: bool = True,
        weight: float = 10.0,
        head_weights: dict[str, float] | None = None,
        loss_balancer: LossBalancer | None = None,
        logit_kd: bool = True,
        adversarial: FeatureAdversaries | None = None,
        config_terms: Sequence[Callable] = (),
        extra_terms: Sequence[Callable] = (),
        heatmap_loss: Callable | None = None,
        teacher_fp32_modules: Sequence[tuple[str, ...] | None] = (),
    ):
        """
        Args:
            student: the detector being trained.
            teachers: frozen detectors of the student's class, same output stride.
            links: one :class:`TeacherLink` per teacher.
            use_labels: add the student's own losses (True) or not (label-free).
            weight: overall weight of the distillation terms.
            head_weights: per-head weight, multiplied by ``weight``, for the heads
                of the student's ``distillation_losses`` (heatmap, wh, offset for
                CenterNet; heatmap, box for TTFNet); heads not listed: 1.
            loss_balancer: applied to the whole loss dict, or None.
            logit_kd: add the output-map terms ``loss_kd_*``.
            adversarial: adapters and discriminators of adversarial feature
                distillation (``loss_adv_*``), built for these teachers, or None.
            config_terms: the terms MODEL.DISTILL.TERMS names, built from their
                registry (centerx.modeling.distillation_terms); run before ``extra_terms``.
            extra_terms: more distillation terms, each a callable
                ``(distiller, outputs, features, teacher_outputs, teacher_features)
                -> {loss name: loss}`` (e.g. a FitNet-style feature loss; see
                docs/extending.md; by name: MODEL.DISTILL.TERMS). ``nn.Module``
                terms are registered, so their parameters train with the
                student's; the trainer saves their state as "distillation_terms"
                (not in the student's checkpoints).
            heatmap_loss: ``(student logits, teacher logits) -> scalar`` replacing
                the "heatmap" term of the student's ``distillation_losses``
                (MODEL.DISTILL.HEATMAP_LOSS), or None to keep it.
            teacher_fp32_modules: per teacher, the modules that run in float32 when
                the student trains under autocast (its config's SOLVER.AMP.FP32_MODULES),
                or None: all of it (its config trains without AMP); empty: none of
                them (every teacher in the autocast precision).
        """
        super().__init__()
        if len(teachers) != len(links) or not teachers:
            raise ValueError("Distiller needs at least one teacher and one TeacherLink per teacher.")
        extra_terms = list(config_terms) + list(extra_terms)
        if not logit_kd and adversarial is None and not extra_terms:
            raise ValueError(_NOTHING_TO_LEARN)
        self.student = student
        self.teachers = nn.ModuleList(teachers)
        for teacher in self.teachers:
            teacher.requires_grad_(False)
        self.teachers.eval()
        self.links = list(links)
        self.use_labels = use_labels
        self.weight = weight
        self.head_weights = dict(head_weights or {})
        self.loss_balancer = loss_balancer
        self.heatmap_loss = heatmap_loss
        self.teacher_fp32_modules = list(teacher_fp32_modules) or [()] * len(teachers)
        if len(self.teacher_fp32_modules) != len(teachers):
            raise ValueError("teacher_fp32_modules needs one entry per teacher.")
        _check_can_be_student(type(student))
        self.logit_kd = logit_kd
        self.adversarial = adversarial
        self.extra_terms = nn.ModuleList(t for t in extra_terms if isinstance(t, nn.Module))
        # every distillation term, in order: (distiller, outputs, features, teacher outputs,
        # teacher features) -> losses
        self.terms: list[Callable] = (
            ([logit_distillation] if logit_kd else [])
            + ([adversarial_distillation] if adversarial is not None else [])
            + list(extra_terms)
        )

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DISTILL
        _check_can_be_student(META_ARCH_REGISTRY.get(d.STUDENT_META_ARCHITECTURE))
        if not d.LOGIT_KD and not d.ADVERSARIAL.ENABLED and not d.TERMS:
            raise ValueError(_NOTHING_TO_LEARN)
        heatmap_loss = heatmap_distillation_loss(d.HEATMAP_LOSS)
        if not d.TEACHERS:
            raise ConfigValueError(
                "MODEL.DISTILL.TEACHERS is empty: give at least one (config file, weights file, classes) triple."
            )
        entries = [parse_teacher_entry(i, entry) for i, entry in enumerate(d.TEACHERS)]
        tcfgs = [teacher_config(i, config_file, cfg) for i, (config_file, _, _) in enumerate(entries)]
        _check_training_datasets(cfg)
        scfg = student_config(cfg)
        student = META_ARCH_REGISTRY.get(scfg.MODEL.META_ARCHITECTURE)(scfg)
        teachers, links = build_teachers(cfg, student, entries, tcfgs)
        taught = {c for link in links for c in link.student_classes}
        untaught = sorted(set(range(student.num_classes)) - taught)
        if untaught and not d.USE_LABELS:
            logger.warning(
                f"Student classes {untaught} have no teacher: label-free training gives them no training signal."
            )
        adversarial = None
        if d.ADVERSARIAL.ENABLED:
            a = d.ADVERSARIAL
            adversarial = FeatureAdversaries(
                tuple(a.FEATURES),
                [link.name for link in links],
                student.feature_shapes(),
                [t.feature_shapes() for t in teachers],
                a.CHANNELS,
                a.WEIGHT,
            )
        return {
            "student": student,
            "teachers": teachers,
            "links": links,
            "use_labels": d.USE_LABELS,
            "weight": d.WEIGHT,
            "head_weights": {
                "heatmap": d.HEATMAP_WEIGHT,
                "wh": d.WH_WEIGHT,
                "offset": d.OFFSET_WEIGHT,
                "box": d.BOX_WEIGHT,
            },
            "loss_balancer": build_loss_balancer(cfg),
            "logit_kd": d.LOGIT_KD,
            "adversarial": adversarial,
            "config_terms": build_distillation_terms(cfg, student, teachers, links),
            "heatmap_loss": heatmap_loss,
            "teacher_fp32_modules": [tuple(t.SOLVER.AMP.FP32_MODULES) if t.SOLVER.AMP.ENABLED else None for t in tcfgs],
        }

    @property
    def device(self):
        return self.student.device

    def train(self, mode: bool = True):
        """Switch the student's mode; the teachers always stay in eval mode."""
        super().train(mode)
        self.teachers.eval()
        return self

    def state_dict(self, *args, **kwargs):
        """The student's state: teachers are never saved."""
        return self.student.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a (plain or distilled) student checkpoint into the student."""
        return self.student.load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, batched_inputs: list[dict]):
        if not self.training:
            return self.student(batched_inputs)
        images = self.student.preprocess_image(batched_inputs)
        outputs, features = self.student.predict_with_features(images.tensor)
        losses = self.student_losses(outputs, batched_inputs) if self.use_labels else {}
        teacher_outputs, teacher_features = self.teacher_predictions(batched_inputs, images.tensor)
        for term in self.terms:
            losses.update(term(self, outputs, features, teacher_outputs, teacher_features))
        if self.loss_balancer is not None:
            losses = self.loss_balancer(losses)
        return losses

    def student_losses(self, outputs: dict[str, torch.Tensor], batched_inputs: list[dict]) -> dict[str, torch.Tensor]:
        """The student's own losses on the images that have labels.

        A batch without any labelled image gives the same terms, multiplied by 0
        (the loss dict keeps its keys from step to step and across processes).
        """
        if not all("instances" in x for x in batched_inputs):
            raise ValueError(
                "Distiller training with MODEL.DISTILL.USE_LABELS needs 'instances' in every "
                "input dict; set it False for label-free training."
            )
        labeled = [i for i, x in enumerate(batched_inputs) if not x.get("unlabeled", False)]
        rows = labeled or list(range(len(batched_inputs)))
        index = torch.as_tensor(rows, device=self.device)
        gt = [batched_inputs[i]["instances"] for i in rows]
        losses = self.student.losses({k: v.index_select(0, index) for k, v in outputs.items()}, gt)
        if not labeled:
            losses = {k: v * 0.0 for k, v in losses.items()}
        return losses

    def teacher_predictions(
        self, batched_inputs: list[dict], images: torch.Tensor
    ) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
        """Every teacher's (raw output maps, named feature maps) for the batch,
        without gradients (see ``PointDetector.predict_with_features``).

        Args:
            batched_inputs: the input dicts (raw images, for teachers that
                normalise differently).
            images: [N, 3, H, W] the student's normalised, padded batch.

        Returns:
            (output maps per teacher, feature maps per teacher), in teacher order.
        """
        outputs, features = [], []
        with torch.no_grad():
            for teacher, link, fp32 in zip(self.teachers, self.links, self.teacher_fp32_modules):
                # a teacher trained without AMP runs in float32 under the student's autocast
                with torch.autocast(images.device.type, enabled=False) if fp32 is None else nullcontext():
                    out, feats = teacher.predict_with_features(
                        self._teacher_images(teacher, link, batched_inputs, images).float()
                    )
                outputs.append(out)
                features.append(feats)
        return outputs, features

    def distillation_losses(
        self,
        outputs: dict[str, torch.Tensor],
        batched_inputs: list[dict],
        images: torch.Tensor,
        teacher_outputs: Sequence[dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """``loss_kd_<teacher>_<head>`` for every teacher, weighted.

        Args:
            outputs: the student's raw output maps for the batch.
            batched_inputs: the input dicts (raw images, for teachers that
                normalise differently).
            images: [N, 3, H, W] the student's normalised, padded batch.
            teacher_outputs: the teachers' raw output maps for this batch when
                already computed (:meth:`teacher_predictions`); None: run the teachers.
        """
        if teacher_outputs is None:
            teacher_outputs = self.teacher_predictions(batched_inputs, images)[0]
        losses = {}
        key = self.student.class_map
        for t_out, link, teacher in zip(teacher_outputs, self.links, self.teachers):
            # both sides' class-score maps cut to the taught classes, under the student's name for them
            student_taught = dict(outputs, **{key: outputs[key][:, list(link.student_classes)]})
            teacher_taught = dict(t_out, **{key: t_out[teacher.class_map][:, list(link.teacher_channels)]})
            terms = self.student.distillation_losses(student_taught, teacher_taught)
            if self.heatmap_loss is not None:
                terms["heatmap"] = self.heatmap_loss(student_taught[key], teacher_taught[key])
            for head, value in terms.items():
                losses[f"loss_kd_{link.name}_{head}"] = value * (self.weight * self.head_weights.get(head, 1.0))
        return losses

    def _teacher_images(
        self, teacher: PointDetector, link: TeacherLink, batched_inputs: list[dict], images: torch.Tensor
    ) -> torch.Tensor:
        """The batch as the teacher's own preprocessing sees it, padded like the student's."""
        if not link.own_normalization:
            return images
        tensors = []
        for x in batched_inputs:
            image = x["image"].to(self.device)
            if link.swap_channels:
                image = image.flip(0)
            tensors.append((image - teacher.pixel_mean) / teacher.pixel_std)
        return ImageList.from_tensors(tensors, self.student.backbone.size_divisibility).tensor


def logit_distillation(
    distiller: Distiller, outputs, features, teacher_outputs, teacher_features
) -> dict[str, torch.Tensor]:
    """The output-map terms ``loss_kd_<teacher>_<head>`` (MODEL.DISTILL.LOGIT_KD)."""
    return distiller.distillation_losses(outputs, [], outputs[distiller.student.class_map], teacher_outputs)


def adversarial_distillation(
    distiller: Distiller, outputs, features, teacher_outputs, teacher_features
) -> dict[str, torch.Tensor]:
    """The adversarial feature terms ``loss_adv_<teacher>_<level>`` (MODEL.DISTILL.ADVERSARIAL)."""
    return distiller.adversarial(features, teacher_features)


_NOTHING_TO_LEARN = (
    "MODEL.DISTILL.LOGIT_KD and MODEL.DISTILL.ADVERSARIAL.ENABLED are both False and "
    "MODEL.DISTILL.TERMS is empty: the student would learn nothing from its teachers; set one of "
    "them True or name a term."
)


def _check_can_be_student(student_class: type) -> None:
    """A student is a point detector that defines its distillation terms."""
    if (
        not (isinstance(student_class, type) and issubclass(student_class, PointDetector))
        or student_class.distillation_losses is PointDetector.distillation_losses
    ):
        raise ConfigValueError(
            f"MODEL.DISTILL.STUDENT_META_ARCHITECTURE: {student_class.__name__} is not a point "
            "detector with distillation_losses (e.g. CenterNet, TTFNet); see docs/extending.md."
        )


def _check_training_datasets(cfg) -> None:
    folders = {name for name, _ in cfg.DATASETS.IMAGE_FOLDERS}
    used = [n for n in cfg.DATASETS.TRAIN if n in folders]
    if used and cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        raise ConfigValueError(
            f"DATASETS.TRAIN uses image folders {used}, whose images have no annotations; set "
            "DATALOADER.FILTER_EMPTY_ANNOTATIONS False or detectron2 drops every one of them."
        )
    if used and len(used) == len(cfg.DATASETS.TRAIN) and cfg.MODEL.DISTILL.USE_LABELS:
        raise ConfigValueError(
            "Every dataset in DATASETS.TRAIN is an image folder (no labels); set "
            "MODEL.DISTILL.USE_LABELS False for label-free distillation."
        )
