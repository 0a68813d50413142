"""INT8 post-training quantization of an OpenVINO model with NNCF, and saving it as IR.

The model is quantized as the OpenVINO backend reads it (``openvino.read_model``: frontend
extensions, batch-1 Reshape rewrites, a dynamic batch dimension), but without fused
pre-processing: the saved IR takes the same tensor as its source, and the backend fuses the
declared pre-processing into it again when it loads it with the model's unchanged model.yaml.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nncf
import numpy as np
import openvino as ov
import openvino.opset13 as ops
from nncf.common.logging.logger import nncf_logger

from frameserve.backends.openvino import core_for, find_model_file, read_model, runtime_message
from frameserve.errors import InvalidInput, ModelLoadError

Preset = Literal["performance", "mixed"]
IR_FILES = ("model.xml", "model.bin")
WEIGHTED_OPS = frozenset(
    {
        "Convolution",
        "GroupConvolution",
        "ConvolutionBackpropData",
        "GroupConvolutionBackpropData",
        "MatMul",
    }
)


@dataclass(frozen=True, slots=True)
class QuantizeSettings:
    """NNCF's knobs that ``frameserve quantize`` exposes."""

    preset: Preset = "performance"  # mixed: asymmetric activations (better for non-ReLU nets)
    fast_bias_correction: bool = True  # False: NNCF's slower, layer-by-layer bias correction
    ignored_patterns: tuple[str, ...] = ()  # regular expressions on node names kept in float
    ignored_types: tuple[str, ...] = ()  # OpenVINO op types kept in float ("Sigmoid")
    float_head: bool = False  # keep the last weighted layer before each output in float
    verbose: bool = False  # show NNCF's log and progress bars


@dataclass(frozen=True, slots=True)
class ModelInput:
    """The one input a calibration sample feeds, and whether it carries the batch dim."""

    name: str
    batched: bool


def read_for_quantization(
    folder: Path, config: Any, batch_dim: bool | None
) -> tuple[ov.Model, ModelInput]:
    """Read a version folder as the backend does (pre-processing not fused)."""
    source = find_model_file(folder)
    model = read_model(core_for(config), source, config, batch_dim, fuse=False)
    if len(model.inputs) != 1:
        names = [p.get_any_name() for p in model.inputs]
        raise InvalidInput(
            f"{source}: inputs: quantize calibrates models with one image input, got {names}"
        )
    quantizers = sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
    if quantizers:
        raise InvalidInput(
            f"{source}: expected a float model, got one already quantized ({quantizers} "
            "FakeQuantize nodes); choose its float source version with --version"
        )
    decompress_f16_weights(model)
    port = model.inputs[0]
    shape = port.get_partial_shape()
    batched = bool(batch_dim) or (
        batch_dim is None and shape.rank.is_static and len(shape) > 0 and shape[0].is_dynamic
    )
    return model, ModelInput(port.get_any_name(), batched)


def decompress_f16_weights(model: ov.Model) -> int:
    """Replace f16 constants that are converted to f32 (TFLite's f16 weights) with f32 ones.

    Exact (every f16 value is an f32 value), and NNCF can then store the quantized weights as
    i8; behind a Convert they would stay f16 next to their FakeQuantize. Returns how many.
    """
    count = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Convert" or op.get_output_element_type(0) != ov.Type.f32:
            continue
        source = op.input_value(0).get_node()
        if source.get_type_name() != "Constant" or source.get_output_element_type(0) != ov.Type.f16:
            continue
        weights = ops.constant(source.get_data().astype(np.float32))
        weights.set_friendly_name(source.get_friendly_name())
        for target in op.output(0).get_target_inputs():
            target.replace_source_output(weights.output(0))
        count += 1
    model.validate_nodes_and_infer_types()
    return count


def head_layers(model: ov.Model) -> list[str]:
    """Names of the weighted layers nearest to the outputs (walking back through the rest)."""
    found: set[str] = set()
    seen: set[str] = set()
    stack = [out.get_node() for out in model.outputs]
    while stack:
        node = stack.pop()
        name = node.get_friendly_name()
        if name in seen:
            continue
        seen.add(name)
        if node.get_type_name() in WEIGHTED_OPS:
            found.add(name)
            continue
        stack.extend(node.input_value(i).get_node() for i in range(node.get_input_size()))
    return sorted(found)


@contextlib.contextmanager
def _nncf_output(verbose: bool) -> Iterator[None]:
    """Silence NNCF's log and its progress bars (drawn on stdout) unless ``verbose``."""
    if verbose:
        yield
        return
    level = nncf_logger.level
    nncf.set_log_level(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf.set_log_level(level)


def _ignored_scope(model: ov.Model, settings: QuantizeSettings) -> nncf.IgnoredScope | None:
    names = head_layers(model) if settings.float_head else []
    if not (names or settings.ignored_patterns or settings.ignored_types):
        return None
    return nncf.IgnoredScope(
        names=names, patterns=list(settings.ignored_patterns), types=list(settings.ignored_types)
    )


def quantize_model(
    model: ov.Model,
    samples: Iterable[Mapping[str, np.ndarray]],
    count: int,
    settings: QuantizeSettings,
) -> ov.Model:
    """INT8 weights and activations, ranges from the first ``count`` input dicts of ``samples``.

    ``samples`` is iterated once per statistics pass that NNCF makes, so it must be re-iterable.
    """
    preset = nncf.QuantizationPreset(settings.preset)
    with _nncf_output(settings.verbose):
        try:
            return nncf.quantize(
                model,
                nncf.Dataset(samples),
                preset=preset,
                subset_size=count,
                fast_bias_correction=settings.fast_bias_correction,
                ignored_scope=_ignored_scope(model, settings),
            )
        except nncf.ValidationError as err:  # an ignored pattern or type that matches nothing
            raise InvalidInput(f"--ignore/--ignore-type: {err}") from None
        except (RuntimeError, nncf.InternalError, nncf.UnsupportedModelError) as err:
            raise ModelLoadError(
                f"NNCF could not quantize the model: {runtime_message(err)}"
            ) from None


def save_ir(model: ov.Model, folder: Path) -> list[Path]:
    """``folder/model.xml`` + ``model.bin``; float constants stay f32 (what was compared)."""
    xml = folder / IR_FILES[0]
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return [folder / name for name in IR_FILES]


def quantized_ops(xml: Path) -> dict[str, int]:
    """What makes an IR INT8: its FakeQuantize nodes and its i8/u8 weight constants."""
    model = ov.Core().read_model(str(xml))
    kinds: Counter[str] = Counter()
    for op in model.get_ordered_ops():
        name = op.get_type_name()
        if name == "FakeQuantize":
            kinds["FakeQuantize"] += 1
        elif name == "Constant" and op.get_output_element_type(0) in (ov.Type.i8, ov.Type.u8):
            kinds["int8 constants"] += 1
    return dict(kinds)
