"""centerX: CenterNet-family detectors as a detectron2 extension.

torch, torchvision and detectron2 are installed by ``run.sh setup`` (pinned
there); detectron2 is not on PyPI under its own name, so it is not listed here.
"""

import os
import re

from setuptools import find_packages, setup


def read_version() -> str:
    """centerx/version.py's __version__, read as text (the package is not importable before its dependencies)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "centerx", "version.py")
    with open(path, encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


setup(
    name="centerx",
    version=read_version(),
    description="CenterNet / TTFNet detectors, distillation and deployment as a detectron2 extension",
    packages=find_packages(include=["centerx", "centerx.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.0",
        "torchvision>=0.15",
        "timm>=1.0",  # backbones (MODEL.BACKBONE.NAME build_timm_backbone)
        "numpy",
        "opencv-python-headless<5",
        "pycocotools>=2.0.2",
        # detectron2's own pure-Python dependencies
        "fvcore>=0.1.5",
        "iopath>=0.1.7",
        "omegaconf>=2.1,<2.4",
        "hydra-core>=1.1",
        "yacs>=0.1.8",
        "tabulate",
        "cloudpickle",
        "termcolor>=1.1",
        "tqdm>4.29.0",
        "matplotlib",
        "Pillow>=7.1",
        "tensorboard",
        "packaging",
        "setuptools<81",  # detectron2.model_zoo imports pkg_resources
    ],
    extras_require={
        "dev": ["pytest>=7.3", "pytest-xdist>=3.5", "ruff==0.17.6"],
        "export": ["onnx>=1.14", "onnxruntime>=1.16", "onnxslim", "openvino>=2024.0"],
        # the photographs the built-in "photos" dataset is made of (files only; neither is imported)
        "data": ["scikit-image", "scikit-learn"],
    },
)
