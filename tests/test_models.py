"""Generator architectures: the paper's exact parameter budget, the peers near theirs."""

from __future__ import annotations

import numpy as np
import pytest

from qmtgan.train.models.config import GeneratorConfig
from qmtgan.runtime.errors import QmtganError
from qmtgan.train.models.registry import build_generator, default_config
from qmtgan.train.models.summary import layer_rows, summary_table


@pytest.fixture(scope="module")
def paper_generator():
    return build_generator(default_config("multitempgan", patch_size=64))


def test_paper_generator_has_the_papers_parameter_budget(paper_generator):
    weights = paper_generator.trainable_weights
    assert paper_generator.count_params() == 2_560_252
    assert len(weights) == 36
    kernels = [w for w in weights if len(w.shape) == 4]
    assert len(kernels) == 10 and sum(int(np.prod(w.shape)) for w in kernels) == 2_558_000
    assert not paper_generator.non_trainable_weights  # nothing else for a decoder to ship


def test_paper_generator_layer_widths_kernels_and_norms(paper_generator):
    rows = {r.layer: r for r in layer_rows(paper_generator)}
    assert [rows[f"conv{i}"].biases for i in range(1, 6)] == [20, 40, 80, 160, 160]
    assert [rows[f"deconv{i}"].biases for i in range(1, 6)] == [160, 80, 40, 20, 12]
    assert rows["conv1"].weights == 5 * 5 * 12 * 20
    assert rows["deconv2"].weights == 5 * 5 * (160 + 160) * 80  # skip concatenation
    norms = sorted(n for n in rows if n.endswith("_bn"))
    assert norms == sorted([f"conv{i}_bn" for i in (2, 3, 4, 5)] + [f"deconv{i}_bn" for i in (1, 2, 3, 4)])
    out = paper_generator(np.zeros((1, 64, 64, 12), np.float32))
    assert out.shape == (1, 64, 64, 12) and float(np.max(np.abs(out))) <= 1.0


def test_summary_table_totals(paper_generator):
    header, rows = summary_table(paper_generator)
    total = rows[-1]
    # kernels 2,558,000 + norm gamma/beta 1,480 in "parameters"; biases apart
    assert total[0] == "total" and total[2] == "2,559,480" and total[3] == "772" and total[4] == "36"
    assert total[5].startswith("10,241,008") and total[6].startswith("2,560,252")


@pytest.mark.parametrize("name,budget", [("unet", 2.56e6), ("linknet", 2.58e6), ("resnet", 2.88e6)])
def test_peer_generators_are_near_the_papers_budgets(name, budget):
    model = build_generator(default_config(name, patch_size=64))
    assert abs(model.count_params() - budget) / budget < 0.05, model.count_params()
    assert model(np.zeros((1, 64, 64, 12), np.float32)).shape == (1, 64, 64, 12)


def test_configurable_tiny_generator_and_bad_configs():
    tiny = build_generator(GeneratorConfig(ngf=4, depth=3, kernel=3, patch_size=32))
    assert tiny(np.zeros((1, 32, 32, 12), np.float32)).shape == (1, 32, 32, 12)
    with pytest.raises(QmtganError, match="divisible"):
        GeneratorConfig(patch_size=100)
    with pytest.raises(QmtganError, match="unknown generator"):
        default_config("vgg")


def test_discriminator_scores_patches():
    from qmtgan.train.models.discriminator import build_patchgan

    d = build_patchgan(12, 64, ndf=8)
    logits = d([np.zeros((1, 64, 64, 12), np.float32)] * 2)
    assert logits.shape == (1, 5, 5, 1)


@pytest.mark.parametrize("kernel", [3, 4, 5])
def test_subpixel_twin_computes_the_same_function_and_gradients_and_converts_back(kernel):
    """The generator the trainer runs (sub-pixel transposed convolutions gathered from the
    standard kernels) against the standard one: outputs and kernel gradients equal within 1e-5
    of their scale, and the standard form recovered with the same weights."""
    import tensorflow as tf

    from qmtgan.train.models.subpixel import (SubpixelConv2DTranspose, with_standard_deconvs,
                                              with_subpixel_deconvs)

    model = build_generator(GeneratorConfig(ngf=4, depth=3, kernel=kernel, patch_size=16, residual="linear",
                                            spectral_kernel=3), batch_size=1)
    rng = np.random.default_rng(kernel)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    twin = with_subpixel_deconvs(model)
    assert sum(isinstance(layer, SubpixelConv2DTranspose) for layer in twin.layers) == 3
    x = tf.constant(rng.uniform(-1, 1, (1, 16, 16, 12)).astype(np.float32))

    def kernel_grads(m):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(m(x) - 0.3))
        kernels = [layer.kernel for layer in m.layers
                   if layer.name.startswith("deconv") and "_" not in layer.name]
        return m(x).numpy(), [g.numpy() for g in tape.gradient(loss, kernels)]

    (y, grads), (y_twin, grads_twin) = kernel_grads(model), kernel_grads(twin)
    assert np.abs(y).max() > 0.1
    np.testing.assert_allclose(y_twin, y, atol=1e-5)
    for g, g_twin in zip(grads, grads_twin):
        assert np.abs(g).max() > 0
        np.testing.assert_allclose(g_twin, g, atol=1e-5 * np.abs(g).max())
    back = with_standard_deconvs(twin)
    assert not any(isinstance(layer, SubpixelConv2DTranspose) for layer in back.layers)
    for w, w_back in zip(model.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(w_back, w)
