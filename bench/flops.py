"""Count a TFLite model's arithmetic from the flatbuffer's ops and tensor shapes.

Uses LiteRT's own parser (``Interpreter._get_ops_details`` + ``get_tensor_details``) with the
default delegates switched off, so every op of the graph is listed as the converter wrote it.
Convolutions and matrix products are counted as 2 FLOPs per multiply-accumulate; elementwise
ops, pooling and means as one FLOP per element they read or write. For the quantized variants
the same count is "operations" (int8 MACs), which is what the achieved rate compares.

    python -m bench.flops model.tflite
"""

from __future__ import annotations

import sys
from collections import defaultdict
from math import prod

# One FLOP per output element (activation, arithmetic, (de)quantization, layout ops).
_ELEMENTWISE = {
    "ADD", "SUB", "MUL", "DIV", "RELU", "RELU6", "LOGISTIC", "TANH", "HARD_SWISH",
    "QUANTIZE", "DEQUANTIZE", "MAXIMUM", "MINIMUM", "PRELU", "LEAKY_RELU",
}


def model_flops(model_path: str) -> dict:
    """-> {"flops": total, "macs": multiply-accumulates, "by_op": {op: flops}, "ops": count}."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        model_path=str(model_path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    shapes = {t["index"]: tuple(int(d) for d in t["shape"]) for t in it.get_tensor_details()}
    by_op: dict[str, float] = defaultdict(float)
    macs_total = 0
    ops = it._get_ops_details()
    for op in ops:
        name = op["op_name"]
        ins = [shapes[i] for i in op["inputs"] if i >= 0]
        outs = [shapes[i] for i in op["outputs"] if i >= 0]
        out_n = prod(outs[0]) if outs else 0
        macs = 0
        flops = 0.0
        if name == "CONV_2D":  # filter (Cout, kh, kw, Cin)
            macs = out_n * prod(ins[1][1:])
        elif name == "DEPTHWISE_CONV_2D":  # filter (1, kh, kw, C*mult)
            macs = out_n * ins[1][1] * ins[1][2]
        elif name == "FULLY_CONNECTED":  # weights (units, in)
            macs = out_n * ins[1][-1]
        elif name in ("BATCH_MATMUL",):
            macs = out_n * ins[0][-1]
        elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "SUM", "REDUCE_MAX"):
            flops = float(prod(ins[0]))  # every input element read once (windows overlap a bit)
        elif name == "SOFTMAX":
            flops = 3.0 * out_n
        elif name in _ELEMENTWISE:
            flops = float(out_n)
        flops += 2.0 * macs
        macs_total += macs
        by_op[name] += flops
    return {"flops": sum(by_op.values()), "macs": macs_total, "ops": len(ops),
            "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1]))}


if __name__ == "__main__":
    for path in sys.argv[1:]:
        r = model_flops(path)
        print(f"{path}: {r['flops'] / 1e9:.3f} GFLOP ({r['macs'] / 1e9:.3f} GMAC) in {r['ops']} ops")
        for op, f in r["by_op"].items():
            print(f"  {op:20s} {f / 1e9:8.4f} GFLOP")
