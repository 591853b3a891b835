"""A functional model rewired so that one layer's output is an input instead: for a layer the
trainer does not update (the linear residual's spectral map), whose output for each training
patch is then computed once instead of at every step."""

from __future__ import annotations

import keras


def with_layer_as_input(model: keras.Model, name: str) -> keras.Model:
    """The model's own layers (weights shared, not copied), taking (model input, the output of
    layer ``name``) and computing the rest. The graph is walked in layer order (a functional
    model lists a layer after its inputs); each layer is used once."""
    skipped = model.get_layer(name)
    reference = keras.Input(batch_shape=model.inputs[0].shape, name=model.inputs[0].name)
    given = keras.Input(batch_shape=skipped.output.shape, name=f"{name}_output")
    tensors = {id(model.inputs[0]): reference}
    for layer in model.layers[1:]:
        node = layer._inbound_nodes[0]
        if layer is skipped:
            y = given
        else:
            args = [tensors[id(t)] for t in node.input_tensors]
            y = layer(args if len(args) > 1 else args[0])
        tensors[id(node.output_tensors[0])] = y
    return keras.Model([reference, given], tensors[id(model.outputs[0])], name=f"{model.name}_given_{name}")
