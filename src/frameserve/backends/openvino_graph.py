"""Graph-level work on an ``ov.Model`` before it is compiled.

- conversions for MediaPipe's custom TFLite op ``Convolution2DTransposeBias``;
- letting graphs that hard-code batch 1 in their Reshape nodes batch (MediaPipe's detectors);
- fusing declared pre-processing into the graph with ``PrePostProcessor``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from openvino.frontend import ConversionExtension, NodeContext
from openvino.preprocess import ColorFormat, PrePostProcessor

from frameserve.errors import ModelLoadError


def _transpose_conv_bias(node: NodeContext) -> list[ov.Output]:
    """MediaPipe's transposed convolution + bias (stride 2, SAME padding, OHWI weights)."""
    x = ops.transpose(node.get_input(0), [0, 3, 1, 2])
    w = ops.transpose(node.get_input(1), [3, 0, 1, 2])  # OHWI -> [in, out, kh, kw]
    y = ops.convolution_backprop_data(
        x, w, strides=[2, 2], pads_begin=[0, 0], pads_end=[0, 0], auto_pad="same_upper"
    )
    y = ops.add(y, ops.reshape(node.get_input(2), [1, -1, 1, 1], False))
    return [ops.transpose(y, [0, 2, 3, 1]).output(0)]


FRONTEND_EXTENSIONS = {
    "mediapipe": lambda: [ConversionExtension("Convolution2DTransposeBias", _transpose_conv_bias)]
}


def rewrite_batch_reshapes(model: ov.Model) -> int:
    """Turn Reshape targets ``[1, ...]`` into ``[0, ...]`` (copy the batch); returns how many."""
    count = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Reshape":
            continue
        target = op.input_value(1).get_node()
        if target.get_type_name() != "Constant":
            continue
        value = target.get_data().copy()
        if value.ndim != 1 or len(value) < 2 or value[0] != 1:
            continue
        value[0] = 0
        new = ops.reshape(op.input_value(0), ops.constant(value.astype(np.int64)), True)
        for consumer in op.output(0).get_target_inputs():
            consumer.replace_source_output(new.output(0))
        count += 1
    model.validate_nodes_and_infer_types()
    return count


def check_batching(compiled: ov.CompiledModel, source: Any) -> None:
    """A batch of two must give what two batch-1 inferences give, or batching is refused."""
    rng = np.random.default_rng(0)
    feeds = {}
    for port in compiled.inputs:
        shape = [2] + [d.get_length() if d.is_static else 32 for d in port.get_partial_shape()[1:]]
        dtype = np.dtype(port.get_element_type().to_dtype())
        top = 255 if dtype == np.uint8 else 1
        feeds[port.get_any_name()] = rng.uniform(0, top, shape).astype(dtype)
    request = compiled.create_infer_request()
    both = [r.copy() for r in request.infer(feeds).values()]
    for i in range(2):
        single = request.infer({k: v[i : i + 1] for k, v in feeds.items()}).values()
        for j, out in enumerate(single):
            mine = both[j][i : i + 1]
            if both[j].shape[0] != 2 or mine.shape != out.shape:
                raise ModelLoadError(
                    f"{source}: openvino.rewrite_batch_reshapes: a batch of 2 gives output "
                    f"{j} of shape {list(both[j].shape)}, batch 1 gives {list(out.shape)}; this "
                    "graph folds the batch, so it cannot batch; set max_batch_size: 0"
                )
            scale = float(np.abs(out).max()) + 1.0
            if float(np.abs(mine - out).max()) > 1e-2 * scale:
                raise ModelLoadError(
                    f"{source}: openvino.rewrite_batch_reshapes: batched outputs differ from "
                    "batch-1 outputs, so this graph cannot batch; set max_batch_size: 0"
                )


def fuse_preprocessing(model: ov.Model, spec: Any, source: Any) -> None:
    """Colour order, normalisation, layout and dtype inside the graph; input becomes u8 NHWC."""
    name = spec.input or (model.inputs[0].get_any_name() if len(model.inputs) == 1 else None)
    if name is None:
        raise ModelLoadError(f"{source}: preprocess.input: name the input to fuse into")
    ppp = PrePostProcessor(model)
    inp = ppp.input(name)
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(
        ColorFormat.RGB
    )
    inp.model().set_layout(ov.Layout(spec.layout))
    steps = inp.preprocess()
    steps.convert_element_type(ov.Type.f32)
    if spec.color == "bgr":
        steps.convert_color(ColorFormat.BGR)
    # (x * scale - mean) / std == (x - mean / scale) / (std / scale)
    steps.mean([m / spec.scale for m in spec.mean])
    steps.scale([s / spec.scale for s in spec.std])
    try:
        ppp.build()
    except RuntimeError as err:
        raise ModelLoadError(f"{source}: cannot fuse pre-processing: {err}") from None
