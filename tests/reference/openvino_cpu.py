"""Run MediaPipe TFLite models with OpenVINO on CPU, in f32, batch 1 (reference use only).

OpenVINO's TFLite front end cannot read MediaPipe's custom op ``Convolution2DTransposeBias``
(the last layer of ``selfie_segmentation.tflite``); ``convert_transpose_conv_bias`` below
converts it. It is registered on every ``Core`` made here, which does nothing to models without
that op (the face detectors).

Independent of frameserve: written from MediaPipe's op definition, not from product code.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from openvino.frontend import ConversionExtension, NodeContext

CUSTOM_OP = "Convolution2DTransposeBias"


def _const(values: list[int]) -> ov.Node:
    return ops.constant(np.asarray(values, dtype=np.int64))


def convert_transpose_conv_bias(node: NodeContext) -> list[ov.Output]:
    """MediaPipe's ``Convolution2DTransposeBias``: transposed conv + bias, TFLite layouts.

    Inputs: activations NHWC, weights OHWI ``[out, kh, kw, in]``, bias ``[out]``. The op's
    parameters (a raw ``TfLiteTransposeConvParams`` struct, not a flexbuffer, so OpenVINO cannot
    decode them) are stride 2x2 and SAME padding in every MediaPipe segmentation model; in the
    selfie model the kernel is 2x2, so SAME and VALID give the same result (no padding at all).
    """
    x = ops.transpose(node.get_input(0), _const([0, 3, 1, 2]))  # NHWC -> NCHW
    w = ops.transpose(node.get_input(1), _const([3, 0, 1, 2]))  # OHWI -> [in, out, kh, kw]
    y = ops.convolution_backprop_data(
        x,
        w,
        strides=[2, 2],
        pads_begin=[0, 0],
        pads_end=[0, 0],
        dilations=[1, 1],
        auto_pad="same_upper",
    )
    bias = ops.reshape(node.get_input(2), _const([1, -1, 1, 1]), special_zero=False)
    y = ops.add(y, bias)
    return [ops.transpose(y, _const([0, 2, 3, 1])).output(0)]  # NCHW -> NHWC


@lru_cache(maxsize=8)
def compile_tflite(model_path: str) -> ov.CompiledModel:
    """Read and compile one ``.tflite`` for CPU with f32 inference precision (cached by path)."""
    core = ov.Core()
    core.add_extension(ConversionExtension(CUSTOM_OP, convert_transpose_conv_bias))
    model = core.read_model(str(model_path))
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def infer(model_path: str | Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run one batch-1 inference; returns every output by its tensor name, as float32 copies."""
    compiled = compile_tflite(str(model_path))
    request = compiled.create_infer_request()
    result = request.infer({name: np.ascontiguousarray(a) for name, a in inputs.items()})
    outputs: dict[str, np.ndarray] = {}
    for port, value in result.items():
        for name in port.get_names():
            outputs[name] = np.array(value, dtype=np.float32, copy=True)
    return outputs
