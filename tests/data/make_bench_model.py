"""Writes a synthetic YOLO-OBB-shaped ONNX model for `defect-detector bench detect` when no
trained model is at hand (the output file is large-ish and NOT committed):

    python tests/data/make_bench_model.py OUT.onnx [--imgsz 768] [--bias -10.7] [--damp 10]

A conv backbone with roughly YOLO11n's compute at 768 (~9 GFLOPs) feeds three 1x1 heads at
strides 8/16/32, giving the real output layout [1, 4+3+1, N]: boxes of plausible size around
each anchor, sigmoid class scores, angles in [-pi/4, 3pi/4). `--bias` shifts the score logits
(after scaling by `--damp`) and so set how many candidates clear the 0.01 floor (the defaults
leave about a thousand on the bench image,
a busy atomic-resolution image). Weights are random but seeded.
"""

import argparse
import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--imgsz", type=int, default=768)
    ap.add_argument("--bias", type=float, default=-10.7)
    ap.add_argument("--damp", type=float, default=10.0)
    a = ap.parse_args()
    S = a.imgsz
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    n_id = [0]

    def name(p):
        n_id[0] += 1
        return f"{p}{n_id[0]}"

    def conv(x, cin, cout, k, s, act=True):
        w = name("w")
        b = name("b")
        inits.append(numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) * math.sqrt(2.0 / (cin * k * k))).astype(np.float32), w))
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), b))
        y = name("c")
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4))
        if not act:
            return y
        z = name("a")
        nodes.append(helper.make_node("Relu", [y], [z]))
        return z

    x = conv("images", 3, 24, 3, 2)      # /2
    x = conv(x, 24, 48, 3, 2)            # /4
    x = conv(x, 48, 48, 3, 1)
    x = conv(x, 48, 96, 3, 2)            # /8
    p3 = conv(x, 96, 96, 3, 1)
    x = conv(p3, 96, 192, 3, 2)          # /16
    p4 = conv(x, 192, 192, 3, 1)
    x = conv(p4, 192, 384, 3, 2)         # /32
    p5 = conv(x, 384, 384, 3, 1)
    heads = []
    for feat, c, s in ((p3, 96, 8), (p4, 192, 16), (p5, 384, 32)):
        g = S // s
        raw = conv(feat, c, 8, 1, 1, act=False)           # [1, 8, g, g]
        shp = name("shape")
        inits.append(numpy_helper.from_array(np.array([1, 8, g * g], np.int64), shp))
        flat = name("flat")
        nodes.append(helper.make_node("Reshape", [raw, shp], [flat]))
        sig = name("sig")
        nodes.append(helper.make_node("Sigmoid", [flat], [sig]))
        # Per-row affine after the sigmoid: centre = anchor + (sig - .5) * s, size = s * (1 + 3 sig),
        # scores = sigmoid(logit + bias) (recomputed below), angle = -pi/4 + pi * sig.
        gy, gx = np.mgrid[0:g, 0:g]
        anchor_x = ((gx + 0.5) * s).reshape(-1).astype(np.float32)
        anchor_y = ((gy + 0.5) * s).reshape(-1).astype(np.float32)
        mul = np.ones((1, 8, g * g), np.float32)
        add = np.zeros((1, 8, g * g), np.float32)
        mul[0, 0], add[0, 0] = s, anchor_x - 0.5 * s
        mul[0, 1], add[0, 1] = s, anchor_y - 0.5 * s
        mul[0, 2], add[0, 2] = 3 * s, s
        mul[0, 3], add[0, 3] = 3 * s, s
        mul[0, 7], add[0, 7] = math.pi, -math.pi / 4
        m, ad = name("mul"), name("add")
        inits.append(numpy_helper.from_array(mul, m))
        inits.append(numpy_helper.from_array(add, ad))
        y1, y2 = name("m"), name("ad")
        nodes.append(helper.make_node("Mul", [sig, m], [y1]))
        nodes.append(helper.make_node("Add", [y1, ad], [y2]))
        # Scores: sigmoid(raw + bias) on rows 4..6 replace the affine rows.
        bias = np.zeros((1, 8, 1), np.float32)
        bias[0, 4:7] = a.bias
        bn = name("bias")
        inits.append(numpy_helper.from_array(bias, bn))
        # Damped logits so the bias, not the random weights, sets the score level.
        damp = name("damp")
        inits.append(numpy_helper.from_array(np.array(a.damp, np.float32), damp))
        fd, sb, ss = name("fd"), name("sb"), name("ss")
        nodes.append(helper.make_node("Mul", [flat, damp], [fd]))
        nodes.append(helper.make_node("Add", [fd, bn], [sb]))
        nodes.append(helper.make_node("Sigmoid", [sb], [ss]))
        mask = np.zeros((1, 8, 1), np.float32)
        mask[0, 4:7] = 1
        mk, inv = name("mask"), name("inv")
        inits.append(numpy_helper.from_array(mask, mk))
        inits.append(numpy_helper.from_array(1 - mask, inv))
        t1, t2, out = name("t"), name("t"), name("h")
        nodes.append(helper.make_node("Mul", [ss, mk], [t1]))
        nodes.append(helper.make_node("Mul", [y2, inv], [t2]))
        nodes.append(helper.make_node("Add", [t1, t2], [out]))
        heads.append(out)
    nodes.append(helper.make_node("Concat", heads, ["output0"], axis=2))
    n = sum((S // s) ** 2 for s in (8, 16, 32))
    graph = helper.make_graph(
        nodes,
        "bench_obb",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, S, S])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 8, n])],
        inits,
    )
    m = helper.make_model(graph, producer_name="defect-detector bench")
    m.opset_import[0].version = 17
    m.ir_version = 8
    for k, v in {
        "names": "{0: 'grain_boundary', 1: 'vacancy', 2: 'interstitial'}",
        "imgsz": f"[{S}, {S}]",
        "stride": "32",
        "task": "obb",
    }.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, a.out)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
