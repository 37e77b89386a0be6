"""The device a config runs on: the machine's by default, refused clearly when absent."""

import torch


def machine_device() -> str:
    """``"cuda"`` when torch sees a CUDA GPU, else ``"cpu"``: the default of ``MODEL.DEVICE``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> None:
    """Refuse a ``MODEL.DEVICE`` this machine cannot run, naming the key and what works.

    Raises:
        ValueError: ``device`` is not a torch device name, asks for CUDA where torch
            sees no CUDA GPU, or for a GPU index the machine does not have.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"MODEL.DEVICE {device!r} is not a device name ({e}); use 'cpu', 'cuda' or "
            f"'cuda:N', or leave the key out to use this machine's ({machine_device()!r})."
        ) from None
    if parsed.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise ValueError(
            f"MODEL.DEVICE is {device!r} but torch sees no CUDA GPU on this machine (no NVIDIA "
            "driver, or a CPU-only torch). Add MODEL.DEVICE cpu to the command, or remove "
            "MODEL.DEVICE from the config: its default is the machine's device."
        )
    count = torch.cuda.device_count()
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(
            f"MODEL.DEVICE is {device!r} but this machine has {count} CUDA GPU(s) (cuda:0 .. cuda:{count - 1})."
        )
