"""ONNX export of a trained model (``xptrain export``; needs the ``onnx`` extra).

The graph takes float32 pixels in [0, 1] named ``pixels``, shape (N, n_in) for an MLP and
(N, 1, H, W) (ONNX's NCHW) for a CNN, and returns the logits, ``logits`` (N, n_classes).
Dropout is left out (inference). The engine's convolutions are channels-last with weights
(k*k*c_in, c_out) in (kernel row, kernel column, channel) order: they are exported as ONNX
``Conv`` weights (c_out, c_in, k, k), and a ``Transpose`` to NHWC before ``Flatten`` keeps the
engine's order of the features the dense layers were trained on.
"""

import numpy as np

from .errors import UserError

OPSET = 17
INPUT, OUTPUT = "pixels", "logits"
INSTALL = 'ONNX export needs the onnx package: pip install "xptrain[onnx]"'
_ACTIVATIONS = {"Sigmoid": "Sigmoid", "ReLU": "Relu", "Tanh": "Tanh"}


class ExportError(UserError):
    """The model cannot be exported, or the onnx package is missing."""


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError(INSTALL) from None
    return onnx


def to_onnx(spec, state, image_shape, n_classes, opset=OPSET):
    """An ``onnx.ModelProto`` for the model ``spec`` (:meth:`Sequential.spec`) with the
    host parameters ``state`` (:meth:`Sequential.state_dict`), checked by onnx.checker."""
    onnx = _onnx()
    from onnx import TensorProto, helper

    graph = _Graph(helper, state)
    is_cnn = any(e["type"] == "Conv2D" for e in spec["layers"])
    dims = ["N", 1, *image_shape] if is_cnn else ["N", spec["n_in"]]
    name = INPUT
    for i, entry in enumerate(spec["layers"]):
        name = graph.add(i, entry, name)
    graph.nodes.append(helper.make_node("Identity", [name], [OUTPUT]))
    model = helper.make_model(
        helper.make_graph(graph.nodes, "xptrain", [
            helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, dims)], [
            helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", n_classes])],
            graph.weights),
        opset_imports=[helper.make_opsetid("", opset)], producer_name="xptrain")
    model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime releases since 1.14
    onnx.checker.check_model(model, full_check=True)
    return model


class _Graph:
    """Nodes and initializers, one spec entry at a time."""

    def __init__(self, helper, state):
        self.helper, self.state, self.nodes, self.weights = helper, state, [], []

    def const(self, name, array):
        from onnx import numpy_helper

        self.weights.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32),
                                                    name))
        return name

    def node(self, op, inputs, out, **attrs):
        self.nodes.append(self.helper.make_node(op, inputs, [out], **attrs))
        return out

    def add(self, i, entry, x):
        kind, out = entry["type"], f"t{i}"
        if kind in ("Dropout", "Reshape"):  # inference; the CNN input is NCHW already
            return x
        if kind in _ACTIVATIONS:
            return self.node(_ACTIVATIONS[kind], [x], out)
        if kind == "Linear":
            w, b = self.state[f"{i}.W"], self.state[f"{i}.b"]
            return self.node("Gemm", [x, self.const(f"{i}.W", w), self.const(f"{i}.b", b)], out)
        if kind == "Conv2D":
            k, c_in, c_out = entry["k"], entry["c_in"], entry["c_out"]
            w = self.state[f"{i}.W"].reshape(k, k, c_in, c_out).transpose(3, 2, 0, 1)
            pad, s = entry["pad"], entry["stride"]
            return self.node("Conv", [x, self.const(f"{i}.W", w),
                                      self.const(f"{i}.b", self.state[f"{i}.b"])], out,
                             kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4)
        if kind == "MaxPool2D":
            k, s = entry["k"], entry["stride"]
            return self.node("MaxPool", [x], out, kernel_shape=[k, k], strides=[s, s])
        if kind == "Flatten":  # the engine flattens (h, w, c): to NHWC first
            nhwc = self.node("Transpose", [x], f"{out}_nhwc", perm=[0, 2, 3, 1])
            return self.node("Flatten", [nhwc], out, axis=1)
        raise ExportError(f"cannot export layer type {kind!r} to ONNX")


def export_checkpoint(checkpoint_path, onnx_path, opset=OPSET):
    """Write the ONNX file of the model in ``checkpoint_path`` (atomically); return a
    description: input and output names and shapes, the opset."""
    from . import checkpoint

    params, _, meta = checkpoint.load(checkpoint_path)
    try:
        spec, shape = meta["model"], tuple(meta.get("image_shape", (28, 28)))
        model = to_onnx(spec, params, shape, int(meta.get("n_classes", 10)), opset)
    except (KeyError, TypeError) as exc:
        raise checkpoint.CheckpointError(f"{checkpoint_path}: inconsistent checkpoint "
                                         f"({exc})") from None
    checkpoint.atomic_write(onnx_path, lambda f: f.write(model.SerializeToString()))
    inp = model.graph.input[0].type.tensor_type.shape.dim
    return {"file": str(onnx_path), "opset": opset, "input": INPUT, "output": OUTPUT,
            "input_shape": [d.dim_param or d.dim_value for d in inp]}
