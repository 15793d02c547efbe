"""Builds the tiny ONNX models used by the detector tests (run once; the .onnx files are committed).

    python tests/data/make_test_models.py

`tiny_obb.onnx` mimics a YOLO11-OBB export at imgsz 64 with 3 classes: input `images`
[1,3,64,64], output `output0` [1, 4+3+1, 84] (84 = 8*8 + 4*4 + 2*2 anchors, stride 8 first).
Its "detector" is transparent so tests can predict the output from the image:
  * every anchor's box is centred on its grid cell, with a fixed size and angle per level;
  * the score of one class per level is the mean of channel 0 over the anchor's cell
    (stride 8 -> interstitial, stride 16 -> vacancy, stride 32 -> grain_boundary).
Levels use angles 0, pi/2 + 0.3 and -0.5 to exercise the angle range [-pi/4, 3pi/4).

`tiny_dynamic.onnx` is the same idea with a dynamic input [1,3,H,W] (H, W multiples of 32),
as Ultralytics exports with dynamic=True: one anchor per 32-px cell, centred on it, 24x16 px at
angle 0, scored grain_boundary by the cell's mean of channel 0 (other classes 0).

The other models are shaped like things the app must refuse.
"""

import math
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
S = 64
LEVELS = [  # stride, w, h, angle, class row
    (8, 6.0, 4.0, 0.0, 2),
    (16, 12.0, 8.0, math.pi / 2 + 0.3, 1),
    (32, 24.0, 16.0, -0.5, 0),
]
NAMES = "{0: 'grain_boundary', 1: 'vacancy', 2: 'interstitial'}"


def anchors():
    rows = []
    for s, w, h, a, c in LEVELS:
        n = S // s
        for gy in range(n):
            for gx in range(n):
                rows.append(((gx + 0.5) * s, (gy + 0.5) * s, w, h, a, c))
    return rows


def meta(model, extra=None):
    kv = {"names": NAMES, "imgsz": f"[{S}, {S}]", "stride": "32", "task": "obb", "nm_per_px": "0.05"}
    kv.update(extra or {})
    for k, v in kv.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v


def save(model, name):
    model.opset_import[0].version = 17
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(HERE, name))
    print("wrote", name)


def tiny_obb(with_angle=True, name="tiny_obb.onnx"):
    a = anchors()
    n = len(a)
    nodes, inits = [], []

    def const(nm, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32).reshape(1, 1, n), nm))

    inits += [
        numpy_helper.from_array(np.array([0], np.int64), "c_start"),
        numpy_helper.from_array(np.array([1], np.int64), "c_end"),
        numpy_helper.from_array(np.array([1], np.int64), "c_axis"),
    ]
    nodes.append(helper.make_node("Slice", ["images", "c_start", "c_end", "c_axis"], ["ch0"]))
    pooled = []
    for s, *_ in LEVELS:
        k = S // s
        nodes.append(helper.make_node("AveragePool", ["ch0"], [f"pool{s}"], kernel_shape=[s, s], strides=[s, s]))
        inits.append(numpy_helper.from_array(np.array([1, 1, k * k], np.int64), f"shape{s}"))
        nodes.append(helper.make_node("Reshape", [f"pool{s}", f"shape{s}"], [f"flat{s}"]))
        pooled.append(f"flat{s}")
    nodes.append(helper.make_node("Concat", pooled, ["P"], axis=2))
    for name_, col in (("cx", 0), ("cy", 1), ("w", 2), ("h", 3), ("ang", 4)):
        const(name_, [r[col] for r in a])
    rows = ["cx", "cy", "w", "h"]
    for c in range(3):
        const(f"mask{c}", [1.0 if r[5] == c else 0.0 for r in a])
        nodes.append(helper.make_node("Mul", ["P", f"mask{c}"], [f"score{c}"]))
        rows.append(f"score{c}")
    if with_angle:
        rows.append("ang")
    nodes.append(helper.make_node("Concat", rows, ["output0"], axis=1))
    c = len(rows)
    graph = helper.make_graph(
        nodes,
        "tiny_obb",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, S, S])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, c, n])],
        inits,
    )
    m = helper.make_model(graph, producer_name="defect-detector tests")
    meta(m, {"task": "obb" if with_angle else "detect"})
    save(m, name)


def tiny_dynamic():
    """One stride-32 level whose anchor grid follows the input size (Shape/Range at run time)."""
    def i64(nm, v):
        return numpy_helper.from_array(np.array(v, np.int64), nm)

    def f32(nm, v):
        return numpy_helper.from_array(np.array(v, np.float32), nm)

    inits = [i64("c0", [0]), i64("c1", [1]), i64("ax1", [1]), i64("i2", [2]), i64("i3", [3]),
             i64("zero", 0), i64("one", 1), i64("flat", [1, 1, -1]), i64("col", [-1, 1]),
             i64("row", [1, -1]), f32("half", 0.5), f32("stride", 32.0), f32("wv", 24.0),
             f32("hv", 16.0), f32("zf", 0.0)]
    n = helper.make_node
    nodes = [
        n("Slice", ["images", "c0", "c1", "ax1"], ["ch0"]),
        n("AveragePool", ["ch0"], ["pool"], kernel_shape=[32, 32], strides=[32, 32]),
        n("Shape", ["pool"], ["shp"]),
        n("Gather", ["shp", "i2"], ["gh1"], axis=0),
        n("Gather", ["shp", "i3"], ["gw1"], axis=0),
        n("Concat", ["gh1", "gw1"], ["hw"], axis=0),
        n("Reshape", ["pool", "hw"], ["p2"]),  # [gh, gw]: the cell scores
        n("Squeeze", ["gh1"], ["gh"]),
        n("Squeeze", ["gw1"], ["gw"]),
        n("Range", ["zero", "gh", "one"], ["ry"]),
        n("Range", ["zero", "gw", "one"], ["rx"]),
        n("Cast", ["ry"], ["ryf"], to=TensorProto.FLOAT),
        n("Cast", ["rx"], ["rxf"], to=TensorProto.FLOAT),
        n("Add", ["ryf", "half"], ["ry5"]),
        n("Add", ["rxf", "half"], ["rx5"]),
        n("Mul", ["ry5", "stride"], ["cyv"]),
        n("Mul", ["rx5", "stride"], ["cxv"]),
        n("Reshape", ["cyv", "col"], ["cy2"]),
        n("Reshape", ["cxv", "row"], ["cx2"]),
        # Broadcast everything to the [gh, gw] grid through the score map times 0.
        n("Mul", ["p2", "zf"], ["z2"]),
        n("Add", ["z2", "cy2"], ["cyg"]),
        n("Add", ["z2", "cx2"], ["cxg"]),
        n("Add", ["z2", "wv"], ["wg"]),
        n("Add", ["z2", "hv"], ["hg"]),
    ]
    outs = []
    for k, nm in enumerate(["cxg", "cyg", "wg", "hg", "p2", "z2", "z2", "z2"]):
        nodes.append(n("Reshape", [nm, "flat"], [f"row{k}"]))
        outs.append(f"row{k}")
    nodes.append(n("Concat", outs, ["output0"], axis=1))
    graph = helper.make_graph(
        nodes,
        "tiny_dynamic",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 8, "anchors"])],
        inits,
    )
    m = helper.make_model(graph, producer_name="defect-detector tests")
    meta(m)
    save(m, "tiny_dynamic.onnx")


def end_to_end_like():
    """YOLO26-style end-to-end output [1, 300, 7]: must be refused."""
    inits = [numpy_helper.from_array(np.zeros((1, 300, 7), np.float32), "k")]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Add", ["k", "m"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "e2e",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, S, S])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 300, 7])],
        inits,
    )
    m = helper.make_model(graph, producer_name="defect-detector tests")
    meta(m)
    save(m, "end2end_1x300x7.onnx")


def broken_boxes():
    """tiny_obb's head, but every box width is NaN: a diverged model. Must fail, not give
    NaN detections."""
    m = onnx.load(os.path.join(HERE, "tiny_obb.onnx"))
    for init in m.graph.initializer:
        if init.name == "w":
            arr = numpy_helper.to_array(init).copy()
            arr[:] = np.nan
            init.CopyFrom(numpy_helper.from_array(arr, "w"))
    del m.metadata_props[:]
    meta(m)
    save(m, "nan_boxes.onnx")


def uint8_input():
    """A YOLO-shaped model whose input is uint8 (an int8/uint8 export): refused at load."""
    a = anchors()
    n = len(a)
    inits = [numpy_helper.from_array(np.zeros((1, 8, n), np.float32), "k")]
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], keepdims=0),
        helper.make_node("Add", ["k", "m"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "u8",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, 3, S, S])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 8, n])],
        inits,
    )
    m = helper.make_model(graph, producer_name="defect-detector tests")
    meta(m)
    save(m, "uint8_input.onnx")


if __name__ == "__main__":
    tiny_obb()
    tiny_obb(with_angle=False, name="no_angle.onnx")
    end_to_end_like()
    broken_boxes()
    uint8_input()
    tiny_dynamic()
