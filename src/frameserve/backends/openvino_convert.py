"""Source models (ONNX, TFLite, TF SavedModel, PaddlePaddle) to OpenVINO IR.

``convert`` does what ``ov.convert_model`` does (frontend, then ovc's transformations) with the
graph edits in between: cuts at named tensors, shapes and layouts. ``convert_model``'s own
``input=``/``output=`` cannot cut in OpenVINO 2026.4: they only pick among the model's inputs
and outputs ("Name ... is not found among model inputs"), the ONNX frontend implements neither
``extract_subgraph`` nor ``override_all_inputs`` (so not even a subset of an ONNX model's
inputs can be given shapes), and after its transformations inner tensors are often fused away.
Editing the frontend's graph works the same for every format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from openvino.frontend import FrontEndManager

from frameserve.backends.openvino import runtime_message
from frameserve.backends.openvino_graph import FRONTEND_EXTENSIONS
from frameserve.datatypes import from_numpy
from frameserve.errors import InvalidInput, ModelLoadError, NotSupported

# file suffix -> (OpenVINO frontend, what users call the format); a SavedModel is a folder
SOURCE_FORMATS = {
    ".onnx": ("onnx", "ONNX"),
    ".tflite": ("tflite", "TensorFlow Lite"),
    ".pdmodel": ("paddle", "PaddlePaddle"),
}
SAVED_MODEL = ("tf", "TensorFlow SavedModel")
_FRONTEND_LIBRARY = {
    "onnx": "libopenvino_onnx_frontend",
    "tflite": "libopenvino_tensorflow_lite_frontend",
    "paddle": "libopenvino_paddle_frontend",
    "tf": "libopenvino_tensorflow_frontend",
}
_INPUT_RE = re.compile(r"^(?P<name>[^\[\]]+?)(?:\[(?P<dims>[^\[\]]*)\])?$")
# OpenVINO's error text starts with where it was raised: "Check 'x' failed at src/..cpp:221:"
# and "FrontEnd API failed with OpConversionFailure:"; the user needs what follows.
_LOCATION_RE = re.compile(r"Check '.*?' failed at \S+:\d+:\s*|FrontEnd API failed with \w+:\s*")
_DIM_RE = re.compile(r"^(?:(?P<dyn>\?|-1)|(?P<lo>\d*)\.\.(?P<hi>\d*)|(?P<fixed>\d+))$")


@dataclass(frozen=True)
class PortSummary:
    """One input or output of a converted model, in the words the CLI prints."""

    name: str
    datatype: str  # v2 name (FP32, UINT8, ...)
    shape: str  # OpenVINO's notation: [?,3,1..8,224]
    dims: tuple[int, ...] | None  # -1 for a dynamic dim; None when the rank is dynamic
    layout: str = ""


def source_format(src: Path) -> tuple[str, str]:
    """The frontend and format name for ``src``; checks that this OpenVINO has the frontend."""
    if src.is_dir():
        if not (src / "saved_model.pb").is_file():
            raise InvalidInput(
                f"SRC {str(src)!r}: a folder must be a TensorFlow SavedModel "
                "(holding saved_model.pb), found none"
            )
        found = SAVED_MODEL
    elif src.suffix.lower() in SOURCE_FORMATS:
        found = SOURCE_FORMATS[src.suffix.lower()]
    else:
        known = sorted(SOURCE_FORMATS) + ["a SavedModel folder"]
        raise InvalidInput(
            f"SRC {str(src)!r}: unsupported format: expected one of {known}, got "
            f"{src.suffix or 'no suffix'!r}"
        )
    frontend, label = found
    if frontend not in FrontEndManager().get_available_front_ends():
        # The TF and Paddle frontends read files natively (no tensorflow/paddle package), but
        # slim OpenVINO builds may leave their libraries out.
        raise NotSupported(
            f"SRC {str(src)!r}: converting {label} needs OpenVINO's {frontend!r} frontend "
            f"({_FRONTEND_LIBRARY[frontend]}.so), which this openvino installation lacks"
        )
    return found


def _dimension(text: str, arg: str) -> ov.Dimension:
    m = _DIM_RE.match(text.strip())
    if m is None:
        raise InvalidInput(
            f"--input {arg!r}: dimension {text!r}: expected N, ?, -1 or MIN..MAX (either "
            "bound may be left out)"
        )
    if m["dyn"]:
        return ov.Dimension()
    if m["fixed"]:
        return ov.Dimension(int(m["fixed"]))
    lo = int(m["lo"]) if m["lo"] else 0
    hi = int(m["hi"]) if m["hi"] else -1
    if hi != -1 and lo > hi:
        raise InvalidInput(f"--input {arg!r}: dimension {text!r}: expected MIN <= MAX")
    return ov.Dimension(lo, hi)


def parse_input(arg: str) -> tuple[str, ov.PartialShape | None]:
    """``name``, ``name[1,3,224,224]``, ``name[?,3,-1,-1]``, ``name[1..8,3,224,224]``."""
    m = _INPUT_RE.match(arg.strip())
    if m is None:
        raise InvalidInput(
            f"--input {arg!r}: expected NAME or NAME[SHAPE] (e.g. image[1,3,224,224], "
            "image[?,3,-1,-1], image[1..8,3,224,224])"
        )
    name, dims = m["name"].strip(), m["dims"]
    if dims is None:
        return name, None
    parts = dims.split(",") if dims.strip() else []  # "name[]": a scalar
    return name, ov.PartialShape([_dimension(d, arg) for d in parts])


def parse_layout(arg: str) -> tuple[str | None, ov.Layout]:
    """``NCHW`` (every input) or ``name:NCHW`` (one input)."""
    name, _, text = arg.rpartition(":")
    try:
        layout = ov.Layout(text.strip())
    except RuntimeError:
        raise InvalidInput(
            f"--layout {arg!r}: expected letters (NCHW, NHWC, NC...) or NAME:LAYOUT, got {text!r}"
        ) from None
    if not text.strip():
        raise InvalidInput(f"--layout {arg!r}: expected a layout after the name, got ''")
    return (name or None), layout


def frontend_extensions(names: Sequence[str]) -> list[object]:
    """Our frontend conversions by name (``FRONTEND_EXTENSIONS``)."""
    unknown = [n for n in names if n not in FRONTEND_EXTENSIONS]
    if unknown:
        raise InvalidInput(
            f"--extension: expected one of {sorted(FRONTEND_EXTENSIONS)}, got {unknown}"
        )
    return [ext for n in names for ext in FRONTEND_EXTENSIONS[n]()]


def read_source(src: Path, frontend: str, extensions: Sequence[str] = ()) -> ov.Model:
    """The whole source model as its frontend converts it, before any optimisation.

    Cuts need the graph as the source names it: ovc's optimisations fuse tensors away (a
    normalising Div folds into the next Convolution's weights), so they run in ``optimize``.
    """
    exts = frontend_extensions(extensions)
    try:
        fe = FrontEndManager().load_by_framework(frontend)
        for ext in exts:
            fe.add_extension(ext)
        return fe.convert(fe.load(str(src)))
    # The frontends raise GeneralFailure, OpConversionFailure, NotImplementedFailure and
    # RuntimeError, which share no narrower base; each is a failure to report with the source.
    except Exception as err:  # noqa: BLE001
        msg = _LOCATION_RE.sub("", runtime_message(err, 600)).strip()
        hint = ""
        if "Convolution2DTransposeBias" in msg and "mediapipe" not in extensions:
            hint = " (MediaPipe's custom op: add --extension mediapipe)"
        raise ModelLoadError(f"SRC {str(src)!r}: OpenVINO cannot convert it: {msg}{hint}") from None


def optimize(model: ov.Model) -> None:
    """What ``ov.convert_model`` runs after its frontend (ovc's ``moc_emit_ir``)."""
    # Not public API, but the same functions ovc and NNCF call; without them the IR keeps
    # the frontend's raw graph (3x the ops for a small ONNX net), though it computes the same.
    from openvino._offline_transformations import (
        apply_moc_transformations,
        compress_quantize_weights_transformation,
    )

    apply_moc_transformations(model, cf=False, smart_reshape=True)
    compress_quantize_weights_transformation(model)


def _tensor_ports(model: ov.Model) -> dict[str, ov.Output]:
    """Every named tensor of the graph (op outputs; Results only repeat their input's names)."""
    ports: dict[str, ov.Output] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Result":
            continue
        for out in op.outputs():
            for name in out.get_names():
                ports.setdefault(name, out)
    return ports


def _port(ports: dict[str, ov.Output], name: str, flag: str, current: list[str]) -> ov.Output:
    port = ports.get(name)
    if port is None:
        kind = "inputs" if flag == "--input" else "outputs"
        raise InvalidInput(
            f"{flag} {name!r}: the model has {kind} {current} and no tensor named {name!r}"
        )
    return port


def _new_input(port: ov.Output, name: str) -> ov.Node:
    """Feed ``port``'s consumers from a new Parameter: the graph above the cut is dropped."""
    param = ops.parameter(port.get_partial_shape(), port.get_element_type(), name=name)
    for target in list(port.get_target_inputs()):
        target.replace_source_output(param.output(0))
    port.get_tensor().set_names(set())  # one tensor per name in the new graph
    param.output(0).get_tensor().set_names({name})
    return param


def _reachable_parameters(results: list[ov.Node]) -> list[ov.Node]:
    """The Parameters the results depend on, in the order a depth-first walk meets them."""
    seen: set[ov.Node] = set()
    found: list[ov.Node] = []
    stack = list(results)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.get_type_name() == "Parameter":
            found.append(node)
        stack.extend(value.get_node() for value in node.input_values())
    return found


def cut(model: ov.Model, inputs: Sequence[str], outputs: Sequence[str]) -> ov.Model:
    """The graph between the named tensors: ``inputs`` become Parameters, ``outputs`` Results.

    A name that is already a model input keeps its Parameter; inputs not named stay when the
    outputs still need them. No ``outputs`` keeps the model's results. Named inputs come first,
    in the order given.
    """
    current_in = [p.get_any_name() for p in model.inputs]
    current_out = [p.get_any_name() for p in model.outputs]
    ports = _tensor_ports(model)
    out_ports = [_port(ports, n, "--output", current_out) for n in outputs]
    in_ports = [_port(ports, n, "--input", current_in) for n in inputs]
    named: list[ov.Node] = []
    for name, port in zip(inputs, in_ports, strict=True):
        node = port.get_node()
        named.append(node if node.get_type_name() == "Parameter" else _new_input(port, name))
    results = [ops.result(p) for p in out_ports] if outputs else list(model.get_results())
    reachable = _reachable_parameters(results)
    unused = [n for n, node in zip(inputs, named, strict=True) if node not in reachable]
    if unused:
        raise InvalidInput(
            f"--input {unused}: no output depends on these tensors "
            f"(outputs {list(outputs) or current_out})"
        )
    originals = [p for p in model.get_parameters() if p in reachable and p not in named]
    return ov.Model(results, named + originals, model.get_friendly_name())


def reshape(model: ov.Model, shapes: dict[str, ov.PartialShape]) -> None:
    """Give the named inputs static, dynamic or bounded shapes."""
    known = {p.get_any_name(): p for p in model.inputs}
    for name, shape in shapes.items():
        if name not in known:  # cut() checked the names; this guards direct callers
            raise InvalidInput(f"--input {name!r}: the model has inputs {list(known)}")
        old = known[name].get_partial_shape()
        if old.rank.is_static and old.rank.get_length() != shape.rank.get_length():
            raise InvalidInput(
                f"--input {name!r}: the model's shape is {old} (rank {old.rank}), "
                f"got {shape} (rank {shape.rank})"
            )
    try:
        model.reshape(shapes)
    except RuntimeError as err:
        given = ", ".join(f"{n}{s}" for n, s in shapes.items())
        before = ", ".join(f"{n}{known[n].get_partial_shape()}" for n in shapes)
        raise InvalidInput(
            f"--input {given}: the model (shapes {before}) cannot take these shapes: "
            f"{runtime_message(err, 300)}"
        ) from None


def _layout_rank(layout: ov.Layout) -> int | None:
    """How many dims a layout names; None when it has ``...`` (any rank)."""
    items = str(layout).strip("[]").split(",")
    return None if "..." in items else len(items)


def set_layouts(model: ov.Model, layouts: Sequence[tuple[str | None, ov.Layout]]) -> None:
    """Store each input's layout in the IR (``name: None`` sets every input)."""
    params = {p.output(0).get_any_name(): p for p in model.get_parameters()}
    for name, layout in layouts:
        if name is not None and name not in params:
            raise InvalidInput(
                f"--layout '{name}:...': the converted model has inputs {list(params)}, "
                f"got {name!r}"
            )
        for pname, param in params.items():
            if name is not None and pname != name:
                continue
            rank = param.get_output_partial_shape(0).rank
            want = _layout_rank(layout)
            if rank.is_static and want is not None and rank.get_length() != want:
                raise InvalidInput(
                    f"--layout {layout.to_string()}: input {pname!r} has shape "
                    f"{param.get_output_partial_shape(0)} (rank {rank}), the layout names {want} "
                    "dims (use NAME:LAYOUT to set one input)"
                )
            param.set_layout(layout)
    model.validate_nodes_and_infer_types()


def _datatype(port: ov.Output) -> str:
    try:
        return from_numpy(np.dtype(port.get_element_type().to_dtype()))
    except (KeyError, RuntimeError, TypeError):  # a type numpy or v2 lacks (e.g. u4)
        return port.get_element_type().get_type_name().upper()


def summarize(ports: Sequence[ov.Output]) -> tuple[PortSummary, ...]:
    """Names, datatypes, shapes and layouts of a model's inputs or outputs."""
    rows = []
    for port in ports:
        shape = port.get_partial_shape()
        dims = (
            tuple(d.get_length() if d.is_static else -1 for d in shape)
            if shape.rank.is_static
            else None
        )
        layout = ov.layout_helpers.get_layout(port)
        text = "" if layout.empty else layout.to_string()
        rows.append(PortSummary(port.get_any_name(), _datatype(port), str(shape), dims, text))
    return tuple(rows)


def save(model: ov.Model, xml: Path, compress_fp16: bool) -> None:
    """Write ``xml`` and its ``.bin``; weights FP16 only when asked."""
    # save_model compresses to FP16 unless told otherwise
    ov.save_model(model, xml, compress_to_fp16=compress_fp16)


def convert(
    src: Path,
    shapes: Sequence[tuple[str, ov.PartialShape | None]] = (),
    outputs: Sequence[str] = (),
    layouts: Sequence[tuple[str | None, ov.Layout]] = (),
    extensions: Sequence[str] = (),
) -> ov.Model:
    """Convert ``src``, cut it at the named inputs/outputs, set shapes and layouts."""
    frontend, _ = source_format(src)
    model = read_source(src, frontend, extensions)
    names = [name for name, _ in shapes]
    if names or outputs:
        model = cut(model, names, outputs)
    fixed = {name: shape for name, shape in shapes if shape is not None}
    if fixed:
        reshape(model, fixed)
    set_layouts(model, layouts)
    optimize(model)
    return model
