"""Convert a TensorFlow.js graph model (model.json + weight shards) into a TF SavedModel."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

NodeDict = dict[str, Any]

# TFJS manifest dtype -> numpy dtype of the bytes stored in the shard (before dequantisation)
_STORED_DTYPES: dict[str, npt.DTypeLike] = {
    "float32": np.float32,
    "int32": np.int32,
    "bool": np.bool_,
    "float16": np.float16,
    "uint8": np.uint8,
    "uint16": np.uint16,
}
# GraphDef DataType enum names -> numpy dtypes that Const tensors may take
_GRAPH_DTYPES: dict[str, npt.DTypeLike] = {
    "DT_FLOAT": np.float32,
    "DT_HALF": np.float32,  # TFJS has no half type; we keep such tensors float32
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_BOOL": np.bool_,
    "DT_UINT8": np.uint8,
}
# ops that TFJS's converter fuses and plain TensorFlow does not know (or names differently)
_FUSED_BASE_OPS = {"_FusedConv2D": "Conv2D", "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative"}
_ACTIVATIONS = {"Relu", "Relu6", "LeakyRelu", "Elu", "Sigmoid", "Tanh"}


@dataclass
class TfjsGraphModel:
    """A parsed TFJS graph model: GraphDef nodes as JSON dicts, weights as numpy arrays."""

    nodes: list[NodeDict]
    weights: dict[str, npt.NDArray[Any]]
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def decode_weight(
    buffer: bytes, offset: int, spec: Mapping[str, Any]
) -> tuple[npt.NDArray[Any], int]:
    """Decode one manifest entry starting at `offset`; return the array and the next offset."""
    shape = [int(d) for d in spec["shape"]]
    count = int(np.prod(shape)) if shape else 1
    quant = spec.get("quantization")
    stored = np.dtype(_STORED_DTYPES[quant["dtype"] if quant else spec["dtype"]])
    size = count * stored.itemsize
    raw = np.frombuffer(buffer, dtype=stored, count=count, offset=offset)
    if quant is None:
        values: npt.NDArray[Any] = raw.copy()
    elif quant["dtype"] == "float16":
        values = raw.astype(np.float32)
    else:  # affine uint8/uint16 quantisation: value = stored * scale + min
        values = (raw.astype(np.float32) * quant["scale"] + quant["min"]).astype(np.float32)
        if spec["dtype"] == "int32":
            values = np.rint(values).astype(np.int32)
    return values.reshape(shape), offset + size


def read_weights(
    manifest: Sequence[Mapping[str, Any]], base_dir: Path
) -> dict[str, npt.NDArray[Any]]:
    """Read every weight group of a TFJS weights manifest; shards of a group are concatenated."""
    weights: dict[str, npt.NDArray[Any]] = {}
    for group in manifest:
        buffer = b"".join((base_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            if spec["dtype"] not in _STORED_DTYPES:
                raise ValueError(f"unsupported weight dtype {spec['dtype']!r} for {spec['name']}")
            weights[spec["name"]], offset = decode_weight(buffer, offset, spec)
        if offset != len(buffer):
            raise ValueError(
                f"weight group {group['paths']} has {len(buffer) - offset} spare bytes"
            )
    return weights


def load_tfjs_model(model_json: Path) -> TfjsGraphModel:
    """Parse a TFJS graph model.json and read its weight shards from the same folder."""
    spec = json.loads(model_json.read_text())
    if spec.get("format", "graph-model") != "graph-model":
        raise ValueError(f"{model_json} is a {spec['format']!r}, not a TFJS graph model")
    signature = spec.get("signature", {})
    return TfjsGraphModel(
        nodes=list(spec["modelTopology"]["node"]),
        weights=read_weights(spec["weightsManifest"], model_json.parent),
        inputs=sorted(signature.get("inputs", {})),
        outputs=sorted(signature.get("outputs", {})),
    )


def fill_constants(nodes: Sequence[NodeDict], weights: Mapping[str, npt.NDArray[Any]]) -> list[Any]:
    """Turn JSON nodes into NodeDefs, putting each Const's weight in, in the node's own dtype.

    TFJS stores int64 as int32 and float32 as float16 when quantised: the node's `dtype` attr wins.
    """
    import tensorflow as tf
    from google.protobuf import json_format  # type: ignore[import-untyped,unused-ignore]

    node_defs = []
    for node in nodes:
        node_def = json_format.ParseDict(node, tf.compat.v1.NodeDef())
        if node["op"] == "Const" and node["name"] in weights:  # else its value is inline
            dtype_name = node["attr"]["dtype"]["type"]
            value = np.asarray(weights[node["name"]]).astype(_GRAPH_DTYPES[dtype_name])
            node_def.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
            node_def.attr["dtype"].type = node_def.attr["value"].tensor.dtype
        node_defs.append(node_def)
    return node_defs


def _const_node(name: str, value: npt.NDArray[Any]) -> Any:
    import tensorflow as tf

    node_def = tf.compat.v1.NodeDef(name=name, op="Const")
    tensor = tf.make_tensor_proto(value)
    node_def.attr["value"].tensor.CopyFrom(tensor)
    node_def.attr["dtype"].type = tensor.dtype
    return node_def


def sparse_to_dense(
    indices: npt.NDArray[Any],
    output_shape: npt.NDArray[Any],
    values: npt.NDArray[Any],
    default: npt.NDArray[Any],
) -> npt.NDArray[Any]:
    """numpy twin of tf.sparse.to_dense's op SparseToDense (indices: [N], [N, rank] or scalar)."""
    dense = np.full(np.atleast_1d(output_shape).astype(np.int64), default, dtype=default.dtype)
    idx = np.asarray(indices).reshape(-1, dense.ndim) if dense.ndim else np.zeros((0, 0), np.int64)
    if idx.shape[0]:
        dense[tuple(idx.T)] = np.broadcast_to(values, (idx.shape[0],))
    return dense


def fold_sparse_to_dense(node_defs: list[Any]) -> list[Any]:
    """Replace every SparseToDense whose inputs are all constants by a Const with its value."""
    import tensorflow as tf

    consts = {n.name: n for n in node_defs if n.op == "Const"}
    folded = []
    for node_def in node_defs:
        inputs = [i.split(":")[0] for i in node_def.input]
        if node_def.op == "SparseToDense" and all(i in consts for i in inputs):
            args = [tf.make_ndarray(consts[i].attr["value"].tensor) for i in inputs]
            node_def = _const_node(node_def.name, sparse_to_dense(*args))
            logger.debug("folded %s into a constant", node_def.name)
        folded.append(node_def)
    return folded


def split_fused_ops(node_defs: list[Any]) -> list[Any]:
    """Split TFJS's _FusedConv2D / FusedDepthwiseConv2dNative into convolution + BiasAdd + act."""
    result = []
    for node_def in node_defs:
        if node_def.op in _FUSED_BASE_OPS:
            result.extend(_split_fused(node_def))
        else:
            result.append(node_def)
    return result


def _split_fused(node_def: Any) -> list[Any]:
    import tensorflow as tf

    fused_ops = [op.decode() for op in node_def.attr["fused_ops"].list.s]
    if any(op not in {"BiasAdd", *_ACTIVATIONS} for op in fused_ops):
        raise ValueError(f"{node_def.name}: cannot split fused ops {fused_ops}")
    data_inputs = [i for i in node_def.input if not i.startswith("^")]
    conv = tf.compat.v1.NodeDef(
        name=f"{node_def.name}/conv", op=_FUSED_BASE_OPS[node_def.op], input=data_inputs[:2]
    )
    for key in ("T", "strides", "padding", "data_format", "dilations", "explicit_paddings"):
        if key in node_def.attr:
            conv.attr[key].CopyFrom(node_def.attr[key])
    chain, previous = [conv], conv.name
    for position, op in enumerate(fused_ops):
        step = tf.compat.v1.NodeDef(name=f"{node_def.name}/{op.lower()}_{position}", op=op)
        step.input.append(previous)
        if op == "BiasAdd":
            step.input.append(data_inputs[2])
            if "data_format" in node_def.attr:
                step.attr["data_format"].CopyFrom(node_def.attr["data_format"])
        if op == "LeakyRelu" and "leakyrelu_alpha" in node_def.attr:
            step.attr["alpha"].f = node_def.attr["leakyrelu_alpha"].f
        step.attr["T"].CopyFrom(node_def.attr["T"])
        chain.append(step)
        previous = step.name
    chain[-1].name = node_def.name  # consumers refer to the fused node by its own name
    return chain


def build_graph_def(model: TfjsGraphModel) -> Any:
    """A plain TensorFlow GraphDef equivalent to the TFJS graph, with weights as constants."""
    import tensorflow as tf

    node_defs = split_fused_ops(fold_sparse_to_dense(fill_constants(model.nodes, model.weights)))
    graph_def = tf.compat.v1.GraphDef()
    graph_def.node.extend(node_defs)
    return graph_def


def to_concrete_function(
    graph_def: Any, inputs: Mapping[str, str], outputs: Mapping[str, str]
) -> Callable[..., Any]:
    """Import `graph_def` and prune it to a function from `inputs` to `outputs` (name -> tensor)."""
    import tensorflow as tf

    def _import() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    graph = wrapped.graph
    return wrapped.prune(  # type: ignore[no-any-return]
        feeds=[graph.get_tensor_by_name(t) for t in inputs.values()],
        fetches={name: graph.get_tensor_by_name(t) for name, t in outputs.items()},
    )


def save_saved_model(
    function: Callable[..., Any], input_specs: Mapping[str, Any], export_dir: Path
) -> None:
    """Save `function` under signature `serving_default`, its inputs named by `input_specs`."""
    import tensorflow as tf

    names = list(input_specs)
    specs = [tf.TensorSpec(s.shape, s.dtype, name=n) for n, s in input_specs.items()]

    module = tf.Module()
    module.pruned = function  # keep the imported graph tracked

    def _serve(*args: Any) -> dict[str, Any]:
        return function(*args)  # type: ignore[no-any-return]

    serve = tf.function(_serve, input_signature=specs)
    module.serve = serve
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": serve})
    logger.info("saved %s with inputs %s", export_dir, names)


def convert(
    model_json: Path,
    export_dir: Path,
    outputs: Mapping[str, str] | None = None,
) -> None:
    """Convert a TFJS graph model to a float32 SavedModel.

    Args:
        model_json: the TFJS model.json; weight shards are read from its folder.
        export_dir: where the SavedModel is written (must not exist yet).
        outputs: signature output name -> graph tensor name; defaults to the model's signature,
            named after the tensors (":" and "/" replaced by "_").
    """
    import tensorflow as tf

    model = load_tfjs_model(model_json)
    graph_def = build_graph_def(model)
    placeholders = {n.name: n for n in graph_def.node if n.op == "Placeholder"}
    input_names = [t.split(":")[0] for t in model.inputs] or sorted(placeholders)
    inputs = {name: f"{name}:0" for name in input_names}
    if outputs is None:
        outputs = {_signature_name(t): t for t in model.outputs}
    function = to_concrete_function(graph_def, inputs, outputs)
    input_specs = {
        name: tf.TensorSpec(
            tf.TensorShape(placeholders[name].attr["shape"].shape),
            tf.as_dtype(placeholders[name].attr["dtype"].type),
        )
        for name in input_names
    }
    save_saved_model(function, input_specs, export_dir)


def _signature_name(tensor_name: str) -> str:
    name = tensor_name[:-2] if tensor_name.endswith(":0") else tensor_name
    return name.replace(":", "_").replace("/", "_")


def verify_saved_model(
    export_dir: Path,
    input_shapes: Mapping[str, Sequence[int]],
    output_shapes: Mapping[str, Sequence[int]],
) -> None:
    """Run the SavedModel once on zeros; raise ValueError unless outputs are finite, as shaped."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    outputs = serve(**{name: tf.zeros(shape) for name, shape in input_shapes.items()})
    shapes = {name: tuple(tensor.shape) for name, tensor in outputs.items()}
    if shapes != {name: tuple(shape) for name, shape in output_shapes.items()}:
        raise ValueError(f"{export_dir} outputs {shapes}, expected {dict(output_shapes)}")
    if not all(np.isfinite(tensor.numpy()).all() for tensor in outputs.values()):
        raise ValueError(f"{export_dir} gives non-finite outputs")
