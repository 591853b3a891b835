"""The device that trains. TensorFlow places each op on its first GPU when it sees one (the GPU
build, `make GPU=1`, and a CUDA driver), with no flag; otherwise on the CPU."""

from __future__ import annotations


def gpus() -> list[str]:
    """The GPUs TensorFlow sees, by name ('NVIDIA ...'); empty on the CPU build."""
    import tensorflow as tf

    found = tf.config.list_physical_devices("GPU")
    return [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in found]


def training_device() -> str:
    """'GPU (name)' for the first GPU, or 'CPU'."""
    seen = gpus()
    return f"GPU ({seen[0]})" if seen else "CPU"
