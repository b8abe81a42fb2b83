"""TFJS graph model -> SavedModel, on a tiny graph written here and checked against numpy."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_celery.model_prep.tfjs_convert import (
    build_graph_def,
    convert,
    decode_weight,
    load_tfjs_model,
    read_weights,
    sparse_to_dense,
    verify_saved_model,
)

rng = np.random.default_rng(0)
X = rng.normal(size=(1, 4, 4, 2)).astype(np.float32)
W = rng.normal(size=(1, 1, 2, 3)).astype(np.float32)
B = rng.normal(size=(3,)).astype(np.float32)


def attr_s(text: str) -> dict[str, str]:
    return {"s": base64.b64encode(text.encode()).decode()}


def const(name: str, dtype: str) -> dict[str, Any]:
    return {
        "name": name,
        "op": "Const",
        "attr": {"dtype": {"type": dtype}, "value": {"tensor": {}}},
    }


CONV_ATTRS = {
    "T": {"type": "DT_FLOAT"},
    "strides": {"list": {"i": ["1", "1", "1", "1"]}},
    "padding": attr_s("VALID"),
    "data_format": attr_s("NHWC"),
}
NODES: list[dict[str, Any]] = [
    {"name": "x", "op": "Placeholder", "attr": {
        "dtype": {"type": "DT_FLOAT"},
        "shape": {"shape": {"dim": [{"size": "1"}, {"size": "4"}, {"size": "4"}, {"size": "2"}]}},
    }},
    const("w", "DT_FLOAT"),
    const("b", "DT_FLOAT"),
    const("sd/indices", "DT_INT64"),
    const("sd/shape", "DT_INT64"),
    const("sd/values", "DT_INT64"),
    const("sd/default", "DT_INT64"),
    const("shape_base", "DT_INT64"),
    {"name": "conv", "op": "Conv2D", "input": ["x", "w"], "attr": CONV_ATTRS},
    {"name": "add", "op": "Add", "input": ["conv", "b"], "attr": {"T": {"type": "DT_FLOAT"}}},
    {"name": "Identity", "op": "Identity", "input": ["add"], "attr": {"T": {"type": "DT_FLOAT"}}},
    {"name": "sd", "op": "SparseToDense",
     "input": ["sd/indices", "sd/shape", "sd/values", "sd/default"],
     "attr": {"T": {"type": "DT_INT64"}, "Tindices": {"type": "DT_INT64"},
              "validate_indices": {"b": True}}},
    {"name": "shape", "op": "AddV2", "input": ["shape_base", "sd"],
     "attr": {"T": {"type": "DT_INT64"}}},
    {"name": "flat", "op": "Reshape", "input": ["add", "shape"],
     "attr": {"T": {"type": "DT_FLOAT"}, "Tshape": {"type": "DT_INT64"}}},
    {"name": "Identity_1", "op": "Identity", "input": ["flat"],
     "attr": {"T": {"type": "DT_FLOAT"}}},
    {"name": "fused", "op": "_FusedConv2D", "input": ["x", "w", "b"], "attr": {
        **CONV_ATTRS,
        "num_args": {"i": "1"},
        "fused_ops": {"list": {"s": [attr_s("BiasAdd")["s"], attr_s("LeakyRelu")["s"]]}},
        "leakyrelu_alpha": {"f": 0.1},
    }},
    {"name": "Identity_2", "op": "Identity", "input": ["fused"],
     "attr": {"T": {"type": "DT_FLOAT"}}},
]  # fmt: skip
# (name, stored values, manifest entry): int64 consts are stored as int32, w as float16
WEIGHTS: list[tuple[np.ndarray, dict[str, Any]]] = [
    (W.astype(np.float16), {"name": "w", "shape": [1, 1, 2, 3], "dtype": "float32",
                            "quantization": {"dtype": "float16", "original_dtype": "float32"}}),
    (B, {"name": "b", "shape": [3], "dtype": "float32"}),
    (np.array([[0]], np.int32), {"name": "sd/indices", "shape": [1, 1], "dtype": "int32"}),
    (np.array([2], np.int32), {"name": "sd/shape", "shape": [1], "dtype": "int32"}),
    (np.array([1], np.int32), {"name": "sd/values", "shape": [1], "dtype": "int32"}),
    (np.array(0, np.int32), {"name": "sd/default", "shape": [], "dtype": "int32"}),
    (np.array([0, 48], np.int32), {"name": "shape_base", "shape": [2], "dtype": "int32"}),
]  # fmt: skip


def write_tfjs_model(folder: Path) -> Path:
    (folder / "group1-shard1of2.bin").write_bytes(b"".join(v.tobytes() for v, _ in WEIGHTS[:2]))
    (folder / "group1-shard2of2.bin").write_bytes(b"".join(v.tobytes() for v, _ in WEIGHTS[2:]))
    model = {
        "format": "graph-model",
        "signature": {"inputs": {"x:0": {}}, "outputs": {"Identity:0": {}, "Identity_1:0": {}}},
        "modelTopology": {"node": NODES, "library": {}, "versions": {}},
        "weightsManifest": [{
            "paths": ["group1-shard1of2.bin", "group1-shard2of2.bin"],
            "weights": [spec for _, spec in WEIGHTS],
        }],
    }  # fmt: skip
    (folder / "model.json").write_text(json.dumps(model))
    return folder / "model.json"


def test_decode_float16_and_affine_uint8() -> None:
    halves = np.array([1.5, -2.0], np.float16).tobytes()
    spec = {"shape": [2], "dtype": "float32", "quantization": {"dtype": "float16"}}
    values, end = decode_weight(halves, 0, spec)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, [1.5, -2.0])
    assert end == 4
    quant = {"dtype": "uint8", "scale": 0.5, "min": -1.0}
    values, end = decode_weight(
        b"\x00\x04", 0, {"shape": [2], "dtype": "float32", "quantization": quant}
    )
    np.testing.assert_array_equal(values, [-1.0, 1.0])
    assert end == 2


def test_read_weights_refuses_spare_bytes(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"\0" * 12)
    manifest = [{"paths": ["w.bin"], "weights": [{"name": "a", "shape": [2], "dtype": "int32"}]}]
    with pytest.raises(ValueError, match="spare bytes"):
        read_weights(manifest, tmp_path)


def test_sparse_to_dense() -> None:
    dense = sparse_to_dense(np.array([[0, 1], [1, 0]]), np.array([2, 2]), np.array(7), np.array(0))
    np.testing.assert_array_equal(dense, [[0, 7], [7, 0]])
    empty = sparse_to_dense(np.zeros((0, 1), np.int64), np.array([3]), np.zeros(0), np.array(5))
    np.testing.assert_array_equal(empty, [5, 5, 5])


def test_converted_model_matches_numpy(tmp_path: Path) -> None:
    import tensorflow as tf

    export_dir = tmp_path / "saved"
    outputs = {"y": "Identity:0", "flat": "Identity_1:0", "fused": "Identity_2:0"}
    convert(write_tfjs_model(tmp_path), export_dir, outputs)

    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["x"]
    result = {k: v.numpy() for k, v in serve(x=tf.constant(X)).items()}
    expected = X @ W.astype(np.float16).astype(np.float32)[0, 0] + B
    np.testing.assert_allclose(result["y"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result["flat"], expected.reshape(1, 48), rtol=1e-5, atol=1e-5)
    leaky = np.where(expected > 0, expected, 0.1 * expected)
    np.testing.assert_allclose(result["fused"], leaky, rtol=1e-5, atol=1e-5)
    verify_saved_model(
        export_dir, {"x": X.shape}, {"y": (1, 4, 4, 3), "flat": (1, 48), "fused": (1, 4, 4, 3)}
    )
    with pytest.raises(ValueError, match="expected"):
        verify_saved_model(export_dir, {"x": X.shape}, {"y": (1, 4, 4, 3)})


def test_default_outputs_are_named_after_the_signature(tmp_path: Path) -> None:
    import tensorflow as tf

    convert(write_tfjs_model(tmp_path), tmp_path / "saved")
    serve = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    assert set(serve.structured_outputs) == {"Identity", "Identity_1"}


def test_graph_def_has_only_standard_ops_and_retyped_constants(tmp_path: Path) -> None:
    import tensorflow as tf

    graph_def = build_graph_def(load_tfjs_model(write_tfjs_model(tmp_path)))
    nodes = {node.name: node for node in graph_def.node}
    assert {"SparseToDense", "_FusedConv2D"}.isdisjoint(node.op for node in graph_def.node)
    assert nodes["sd"].op == "Const"
    np.testing.assert_array_equal(tf.make_ndarray(nodes["sd"].attr["value"].tensor), [1, 0])
    assert nodes["shape_base"].attr["dtype"].type == tf.int64.as_datatype_enum
    assert nodes["w"].attr["value"].tensor.dtype == tf.float32.as_datatype_enum
    assert [nodes["fused"].op, *nodes["fused"].input] == ["LeakyRelu", "fused/biasadd_0"]
