#!/usr/bin/env python3
"""Compare convkit with onnxruntime and OpenVINO on the same ResNet-50 graphs and weights.

  compare.py check [--variants a,b,c,d] [--size 64] [--batch 2]
      builds each variant's ONNX graph from the safetensors that `convkit export` writes,
      runs onnxruntime and `convkit run` on the same .npy input, and fails unless
      max|convkit - onnxruntime| / max|onnxruntime| <= 1e-5.
  compare.py bench [--variants a,d] [--batch 1] [--threads 2] [--rounds 3] [--iters 10]
      times convkit, onnxruntime and OpenVINO in alternating rounds and prints the lowest
      median per engine and variant, and the ratios.
  compare.py numerics [--variants a,b,c,d] [--size 224] [--images 8]
      convkit bf16 and OpenVINO at its default settings against convkit f32 (within 2e-6 of
      float64): max|difference| / max|logit|, and the share of images whose top-1 and top-5
      classes agree with f32.
  compare.py memory [--variant d] [--batch 1] [--threads 2]
      peak resident memory of the whole process (/usr/bin/time -v) running 5 forward
      passes, per engine, median of 3 processes; and of Python with each engine imported.

The graph follows the "Bag of Tricks" variants exactly as convkit's ResNetSpec does, with
the same key names (torchvision for A/B, timm's deep stem and pooled shortcut for C/D).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONVKIT = os.path.join(ROOT, "target", "release", "convkit")


def layers(variant):
    """Stem convs, blocks, as (conv_key, bn_key, ci, co, k, stride) - mirrors ResNetSpec::layers."""
    deep = variant in "cd"
    stride_on_3x3 = variant != "a"
    pooled = variant == "d"
    if deep:
        stem = [("conv1.0", "conv1.1", 3, 32, 3, 2), ("conv1.3", "conv1.4", 32, 32, 3, 1), ("conv1.6", "bn1", 32, 64, 3, 1)]
    else:
        stem = [("conv1", "bn1", 3, 64, 7, 2)]
    blocks = []
    ci = 64
    for stage, depth in enumerate([3, 4, 6, 3]):
        width = 64 << stage
        co = width * 4
        for b in range(depth):
            name = f"layer{stage + 1}.{b}"
            stride = 2 if b == 0 and stage > 0 else 1
            s1, s2 = (1, stride) if stride_on_3x3 else (stride, 1)
            down = None
            if b == 0:
                if pooled:
                    down = (stride == 2, (f"{name}.downsample.1", f"{name}.downsample.2", ci, co, 1, 1))
                else:
                    down = (False, (f"{name}.downsample.0", f"{name}.downsample.1", ci, co, 1, stride))
            blocks.append(dict(
                conv1=(f"{name}.conv1", f"{name}.bn1", ci, width, 1, s1),
                conv2=(f"{name}.conv2", f"{name}.bn2", width, width, 3, s2),
                conv3=(f"{name}.conv3", f"{name}.bn3", width, co, 1, 1),
                down=down,
            ))
            ci = co
    return stem, blocks


def build_onnx(variant, weights):
    nodes, inits = [], []
    counter = [0]

    def fresh(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def init(name):
        inits.append(numpy_helper.from_array(weights[name].astype(np.float32), name))
        return name

    def conv_bn(x, spec, relu):
        conv, bn, ci, co, k, s = spec
        y = fresh(conv)
        nodes.append(helper.make_node("Conv", [x, init(conv + ".weight")], [y], kernel_shape=[k, k],
                                      strides=[s, s], pads=[k // 2] * 4))
        z = fresh(bn)
        nodes.append(helper.make_node("BatchNormalization", [y] + [init(f"{bn}.{p}") for p in
                                      ("weight", "bias", "running_mean", "running_var")], [z], epsilon=1e-5))
        if relu:
            r = fresh("relu")
            nodes.append(helper.make_node("Relu", [z], [r]))
            return r
        return z

    stem, blocks = layers(variant)
    h = "x"
    for spec in stem:
        h = conv_bn(h, spec, True)
    p = fresh("maxpool")
    nodes.append(helper.make_node("MaxPool", [h], [p], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    h = p
    for b in blocks:
        short = h
        if b["down"] is not None:
            pool, spec = b["down"]
            src = h
            if pool:
                src = fresh("avgpool")
                nodes.append(helper.make_node("AveragePool", [h], [src], kernel_shape=[2, 2], strides=[2, 2],
                                              ceil_mode=1, count_include_pad=0))
            short = conv_bn(src, spec, False)
        t = conv_bn(h, b["conv1"], True)
        t = conv_bn(t, b["conv2"], True)
        t = conv_bn(t, b["conv3"], False)
        s = fresh("add")
        nodes.append(helper.make_node("Add", [t, short], [s]))
        h = fresh("relu")
        nodes.append(helper.make_node("Relu", [s], [h]))
    g, f = fresh("gap"), fresh("flat")
    nodes.append(helper.make_node("GlobalAveragePool", [h], [g]))
    nodes.append(helper.make_node("Flatten", [g], [f], axis=1))
    nodes.append(helper.make_node("Gemm", [f, init("fc.weight"), init("fc.bias")], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, f"resnet50{variant}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def run(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{res.stderr}")
    return res.stdout


def write_npy(path, arr):
    np.save(path, np.ascontiguousarray(arr, dtype=np.float32))


def ort_session(model, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ov_model(model, threads, precision="f32"):
    """OpenVINO's CPU plugin; precision "default" leaves INFERENCE_PRECISION_HINT unset, as a
    user who changes nothing gets it (bf16 on CPUs with AVX512-BF16 or AMX)."""
    import openvino as ov
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", config)
    return compiled


CALIBRATION_IMAGES = 32


def calibration_set(tmp, n=CALIBRATION_IMAGES, size=224):
    """The calibration images every int8 engine is quantized on: n synthetic inputs uniform
    in [-1, 1) (seeded; other images than the timed and compared ones), also as .npy for
    `convkit calibrate --input`."""
    x = np.random.default_rng(1).uniform(-1, 1, (n, 3, size, size)).astype(np.float32)
    path = os.path.join(tmp, "calibration.npy")
    write_npy(path, x)
    return x, path


def convkit_int8(v, wpath, tmp, calib_path):
    """convkit's int8 file of the weights at wpath, calibrated on calib_path."""
    out = os.path.join(tmp, f"{v}.int8.safetensors")
    run([CONVKIT, "calibrate", "--variant", v, "--weights", wpath, "--input", calib_path, "-o", out])
    return out


def ov_int8(model, calib, threads):
    """The ONNX graph quantized by NNCF's post-training quantization (its defaults) on the
    calibration images, compiled as OpenVINO's CPU plugin runs it: int8 where quantized."""
    import nncf
    import openvino as ov
    core = ov.Core()
    ov_model = core.read_model(model.SerializeToString(), b"")
    dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))])
    quantized = nncf.quantize(ov_model, dataset, subset_size=len(calib))
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    return core.compile_model(quantized, "CPU", config)


def ort_int8(model, calib, threads, tmp):
    """The ONNX graph quantized by onnxruntime's static quantization tool (QDQ, u8
    activations, s8 weights per channel) on the calibration images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    raw, src, dst = (os.path.join(tmp, f) for f in ("raw.onnx", "float.onnx", "qdq.onnx"))
    onnx.save(model, raw)
    # The tool's recommended pre-processing: BN folded into the convs before quantization.
    quant_pre_process(raw, src, skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(dst, opts, providers=["CPUExecutionProvider"])


def ov_precision(compiled):
    """The element type OpenVINO computes in, as "f32" or "bf16"."""
    name = str(compiled.get_property("INFERENCE_PRECISION_HINT")).replace("<Type: '", "").replace("'>", "")
    return {"float32": "f32", "bfloat16": "bf16"}.get(name, name)


def check(args, tmp):
    worst = 0.0
    for v in args.variants.split(","):
        wpath = os.path.join(tmp, f"{v}.safetensors")
        run([CONVKIT, "export", "--variant", v, "--seed", "1", "-o", wpath])
        model = build_onnx(v, load_file(wpath))
        x = np.random.default_rng(0).uniform(-1, 1, (args.batch, 3, args.size, args.size + 7)).astype(np.float32)
        xpath, ypath = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
        write_npy(xpath, x)
        run([CONVKIT, "run", "--variant", v, "--weights", wpath, "--input", xpath, "--output", ypath])
        got = np.load(ypath)
        want = ort_session(model, 2).run(None, {"x": x})[0]
        rel = float(np.abs(got - want).max() / np.abs(want).max())
        gc, wc = got - got.mean(1, keepdims=True), want - want.mean(1, keepdims=True)
        rel_c = float(np.abs(gc - wc).max() / np.abs(wc).max())
        print(f"{v.upper()}: max|convkit - onnxruntime| / max|logit| = {rel:.2e}, centred logits {rel_c:.2e}")
        worst = max(worst, rel)
    if worst > 1e-5:
        sys.exit(f"numerics check failed: {worst:.2e} > 1e-5")
    print("numerics check passed")


def bench(args, tmp):
    variants = args.variants.split(",")
    precisions = args.precision.split(",")
    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, 3, 224, 224)).astype(np.float32)
    engines = {}
    names = [f"convkit {p}" for p in precisions] + ["onnxruntime", "openvino f32", "openvino default"]
    if "int8" in precisions:
        names += ["onnxruntime int8", "openvino int8"]
        calib, calib_path = calibration_set(tmp)
    int8_files = {}
    for v in variants:
        wpath = os.path.join(tmp, f"{v}.safetensors")
        run([CONVKIT, "export", "--variant", v, "--seed", "0", "-o", wpath])
        model = build_onnx(v, load_file(wpath))
        if "int8" in precisions:
            int8_files[v] = convkit_int8(v, wpath, tmp, calib_path)
            q = ort_int8(model, calib, args.threads, tmp)
            engines[("onnxruntime int8", v)] = lambda s=q: s.run(None, {"x": x})
            req8 = ov_int8(model, calib, args.threads).create_infer_request()
            engines[("openvino int8", v)] = lambda r=req8: r.infer({0: x})
        sess = ort_session(model, args.threads)
        engines[("onnxruntime", v)] = lambda s=sess: s.run(None, {"x": x})
        for prec in ("f32", "default"):
            comp = ov_model(model, args.threads, prec)
            if prec == "default":
                print(f"openvino default runs {ov_precision(comp)} on this CPU")
            req = comp.create_infer_request()
            engines[(f"openvino {prec}", v)] = lambda r=req: r.infer({0: x})
    medians = {}
    for rnd in range(args.rounds):
        for v in variants:
            for prec in precisions:
                cmd = [CONVKIT, "bench", "--variant", v, "--batch", str(args.batch), "--threads",
                       str(args.threads), "--iters", str(args.iters), "--rounds", "1", "--warmup", "2", "--kxk", args.kxk,
                       "--json"]
                if prec != "f32":
                    cmd += ["--precision", prec]
                if prec == "int8":
                    # The int8 network calibrated on the engines' calibration images, through `run`.
                    medians.setdefault((f"convkit {prec}", v), []).append(convkit_run_ms(
                        v, int8_files[v], x, tmp, args.threads, args.iters))
                    continue
                medians.setdefault((f"convkit {prec}", v), []).append(json.loads(run(cmd))["rows"][0]["median_ms"])
            for eng in names[len(precisions):]:
                f = engines[(eng, v)]
                for _ in range(2):
                    f()
                ts = []
                for _ in range(args.iters):
                    t0 = time.perf_counter()
                    f()
                    ts.append((time.perf_counter() - t0) * 1e3)
                medians.setdefault((eng, v), []).append(float(np.median(ts)))
    print(f"batch {args.batch}, {args.threads} thread(s), {args.rounds} alternating rounds of {args.iters}: "
          "median over rounds of each round's median, ms (range of the round medians)")
    print(f"{'engine':<18}" + "".join(f"{v.upper():>20}" for v in variants))
    mid = {}
    for eng in names:
        cells = []
        for v in variants:
            m = medians[(eng, v)]
            mid[(eng, v)] = float(np.median(m))
            cells.append(f"{mid[(eng, v)]:>8.1f} ({min(m):.0f}-{max(m):.0f})")
        print(f"{eng:<18}" + "".join(f"{c:>20}" for c in cells))
    for v in variants:
        for prec in precisions:
            me = f"convkit {prec}"
            print(f"{v.upper()}: {me} / " + ", ".join(
                f"{other} {mid[(me, v)] / mid[(other, v)]:.3f}" for other in names[len(precisions):]))
    if "a" in variants:
        for eng in names:
            ratios = ", ".join(f"{v.upper()}/A {mid[(eng, v)] / mid[(eng, 'a')]:.3f}" for v in variants if v != "a")
            print(f"{eng}: {ratios}")


def convkit_run_ms(v, int8_path, x, tmp, threads, iters):
    """Median ms of `iters` int8 forward passes of `convkit run` on x, in one process (`run
    --repeat`, no separate warm-up: the median leaves out the first, slower pass)."""
    xpath, ypath = os.path.join(tmp, "bench-x.npy"), os.path.join(tmp, "bench-y.npy")
    write_npy(xpath, x)
    out = run([CONVKIT, "run", "--variant", v, "--weights", int8_path, "--precision", "int8", "--threads",
               str(threads), "--input", xpath, "--output", ypath, "--repeat", str(iters), "--json"])
    return json.loads(out)["median_ms"]


def numerics(args, tmp):
    """bf16 and int8 engines against f32: convkit bf16 and int8, OpenVINO at its default
    settings and int8 (NNCF), onnxruntime int8 (QDQ), each against convkit f32 (which is within 2e-6 of float64, tests/model.rs) on the same
    weights and inputs; and the share of images whose top-1 / top-5 classes agree."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (args.images, 3, args.size, args.size)).astype(np.float32)
    xpath = os.path.join(tmp, "x.npy")
    write_npy(xpath, x)
    calib, calib_path = calibration_set(tmp, size=args.size)
    print(f"{args.images} images {args.size}x{args.size}, uniform in [-1, 1), seeded weights (seed 0); int8 engines "
          f"calibrated on {len(calib)} other such images")
    print(f"{'variant':<8}{'engine':<20}{'max|d| / max|logit|':>22}{'centred':>10}{'top-1 = f32':>13}{'top-5 = f32':>13}")
    for v in args.variants.split(","):
        wpath = os.path.join(tmp, f"{v}.safetensors")
        run([CONVKIT, "export", "--variant", v, "--seed", "0", "-o", wpath])
        model = build_onnx(v, load_file(wpath))
        outs = {}
        for prec in ("f32", "bf16", "int8"):
            ypath = os.path.join(tmp, f"y-{prec}.npy")
            weights = wpath if prec != "int8" else convkit_int8(v, wpath, tmp, calib_path)
            run([CONVKIT, "run", "--variant", v, "--weights", weights, "--input", xpath, "--output", ypath,
                 "--precision", prec])
            outs[f"convkit {prec}"] = np.load(ypath).astype(np.float64)
        ov8 = ov_int8(model, calib, 2).create_infer_request().infer({0: x})
        outs["openvino int8"] = np.asarray(list(ov8.values())[0], dtype=np.float64)
        outs["onnxruntime int8"] = np.asarray(ort_int8(model, calib, 2, tmp).run(None, {"x": x})[0], dtype=np.float64)
        comp = ov_model(model, 2, "default")
        ov = comp.create_infer_request().infer({0: x})
        outs[f"openvino {ov_precision(comp)}"] = np.asarray(list(ov.values())[0], dtype=np.float64)
        outs["onnxruntime f32"] = np.asarray(ort_session(model, 2).run(None, {"x": x})[0], dtype=np.float64)
        want = outs["convkit f32"]
        wc = want - want.mean(1, keepdims=True)
        top1 = want.argmax(1)
        top5 = np.argsort(-want, 1)[:, :5]
        for name, got in outs.items():
            if name == "convkit f32":
                continue
            rel = np.abs(got - want).max() / np.abs(want).max()
            gc = got - got.mean(1, keepdims=True)
            rel_c = np.abs(gc - wc).max() / np.abs(wc).max()
            agree1 = float((got.argmax(1) == top1).mean())
            agree5 = float(np.mean([set(a) == set(b) for a, b in zip(np.argsort(-got, 1)[:, :5], top5)]))
            print(f"{v.upper():<8}{name:<20}{rel:>22.2e}{rel_c:>10.2e}{agree1:>13.2f}{agree5:>13.2f}")


ENGINE_SCRIPT = """
import sys, numpy as np
engine, path, batch, threads, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, 224, 224)).astype(np.float32)
if engine == "onnxruntime":
    import onnxruntime as ort
    if runs:
        o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
        s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        for _ in range(runs): s.run(None, {"x": x})
else:
    import openvino as ov
    if runs:
        core = ov.Core()
        c = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"})
        r = c.create_infer_request()
        for _ in range(runs): r.infer({0: x})
"""


def peak_rss_mib(cmd):
    res = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{res.stderr[-2000:]}")
    for line in res.stderr.splitlines():
        if "Maximum resident set size" in line:
            return int(line.split(":")[1]) / 1024
    sys.exit("no 'Maximum resident set size' in /usr/bin/time output")


def memory(args, tmp):
    v = args.variant
    wpath = os.path.join(tmp, f"{v}.safetensors")
    run([CONVKIT, "export", "--variant", v, "--seed", "0", "-o", wpath])
    onnx_path = os.path.join(tmp, f"{v}.onnx")
    onnx.save(build_onnx(v, load_file(wpath)), onnx_path)
    b, t = str(args.batch), str(args.threads)
    cmds = {
        "convkit": [CONVKIT, "bench", "--variant", v, "--batch", b, "--threads", t, "--iters", "5", "--warmup", "0",
                    "--peak", "1", "--kxk", args.kxk],
        "onnxruntime": [sys.executable, "-c", ENGINE_SCRIPT, "onnxruntime", onnx_path, b, t, "5"],
        "openvino": [sys.executable, "-c", ENGINE_SCRIPT, "openvino", onnx_path, b, t, "5"],
        "python + onnxruntime import": [sys.executable, "-c", ENGINE_SCRIPT, "onnxruntime", onnx_path, b, t, "0"],
        "python + openvino import": [sys.executable, "-c", ENGINE_SCRIPT, "openvino", onnx_path, b, t, "0"],
    }
    print(f"peak RSS, ResNet-50-{v.upper()}, batch {b}, {t} thread(s), 5 forward passes (median of 3 processes)")
    for name, cmd in cmds.items():
        print(f"{name:<30} {float(np.median([peak_rss_mib(cmd) for _ in range(3)])):8.0f} MiB")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--variants", default="a,b,c,d")
    c.add_argument("--size", type=int, default=64)
    c.add_argument("--batch", type=int, default=2)
    b = sub.add_parser("bench")
    b.add_argument("--variants", default="a,d")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--iters", type=int, default=10)
    b.add_argument("--kxk", default="auto", help="convkit's KxK path: auto, winograd, direct, im2col")
    b.add_argument("--precision", default="f32",
                   help="convkit's precisions, comma separated: f32, bf16, int8 (int8 adds onnxruntime's and "
                        "OpenVINO's int8 engines, all calibrated on the same images)")
    n = sub.add_parser("numerics")
    n.add_argument("--variants", default="a,b,c,d")
    n.add_argument("--size", type=int, default=224)
    n.add_argument("--images", type=int, default=8)
    m = sub.add_parser("memory")
    m.add_argument("--variant", default="d")
    m.add_argument("--batch", type=int, default=1)
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--kxk", default="auto", help="convkit's KxK path: auto, winograd, direct, im2col")
    args = p.parse_args()
    if not os.path.exists(CONVKIT):
        sys.exit(f"{CONVKIT} not found: build it with cargo build --release -p convkit-cli")
    with tempfile.TemporaryDirectory() as tmp:
        {"check": check, "bench": bench, "numerics": numerics, "memory": memory}[args.cmd](args, tmp)


if __name__ == "__main__":
    main()
