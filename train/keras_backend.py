"""The Keras generator behind the runtime's Backend interface, on the host only (TensorFlow)."""

from __future__ import annotations

import weakref

import numpy as np

from qmtgan.runtime.backends import Backend


class KerasBackend(Backend):
    """The TF/Keras model in graph mode behind the runtime's Backend interface: the float
    baseline every artifact is measured against, and the trainer's own reconstructions."""

    name = "keras"

    def __init__(self, model, threads: int | None = None):
        import tensorflow as tf

        super().__init__("<keras>", threads)  # in memory: the path only names it
        self.fn = tf.function(lambda x: model(x, training=False))

    def run(self, tile: np.ndarray) -> np.ndarray:
        return self.fn(tile).numpy()


_BACKENDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def keras_backend(generator) -> KerasBackend:
    """One traced backend per generator (re-tracing at every validation costs seconds)."""
    if generator not in _BACKENDS:
        _BACKENDS[generator] = KerasBackend(generator)
    return _BACKENDS[generator]
