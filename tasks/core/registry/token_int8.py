"""The ``onnx-int8-token`` serving form: int8 MatMuls with a quantisation range per token.

ONNX Runtime's dynamic quantisation (``onnx-int8``) gives each MatMul's activations one int8
range for the whole batch. On the quickstart's MiniLM that flipped 2.3 % of SST-2 dev labels
(agreement 97.7 %, under the gate's 99 %), and the cause is that range, not the weights: in
PyTorch, int8 weights alone flipped 1 label of 872, per-tensor int8 activations alone 19. The
feed-forward inputs have channels 14x their median, so one token's outliers coarsen every
other token's steps, and a text's answer then depends on what else shares its batch.

This form rewrites each ``MatMul`` whose right side is a weight into ONNX's own operators:
every row (token) of the activations gets its own uint8 range and zero point
(``QuantizeLinear`` per axis), the weights are int8 per output column, and ONNX Runtime's
``MatMulIntegerToFloat`` multiplies them; the zero points come out exactly through the weights'
column sums (``y = s_row * (ws_col * q.Wq - z_row * ws_col * colsum)``). A text's logits no
longer depend on its batch; on the same 872 sentences agreement was 99.66 % at 1.46x the fp32
graph's speed (one thread, batches of 32; docs/benchmarks.md).

Weights use 7 bits (-64..63): on x86 CPUs without VNNI, ONNX Runtime multiplies uint8 by int8
with ``vpmaddubsw``, whose int16 pair sums saturate at 8-bit weights (agreement fell to 95 %);
at 7 bits a pair is at most 2 * 255 * 64 = 32,640 < 32,767.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tasks.core.serving.runtime import MODEL_FILE

WEIGHT_BITS = 7  # see the module docstring: no int16 saturation without VNNI
MS_DOMAIN = "com.microsoft"  # MatMulIntegerToFloat is an ONNX Runtime contrib operator


def quantize_weight(weight: np.ndarray, bits: int = WEIGHT_BITS):
    """(int8 weight, fp32 scale per output column, scale * column sum) of a [K, N] weight:
    symmetric, zero point 0, the largest magnitude of each column on the top step."""
    top = 2 ** (bits - 1) - 1
    scale = (np.maximum(np.abs(weight).max(axis=0), 1e-12) / top).astype(np.float32)
    quantized = np.clip(np.round(weight / scale), -top - 1, top).astype(np.int8)
    column_sums = (quantized.astype(np.float64).sum(axis=0) * scale).astype(np.float32)
    return quantized, scale, column_sums


class _Rewrite:
    """The new node list and initializers of one graph, with per-input quantisation shared
    (query, key and value read the same hidden states: quantised once)."""

    def __init__(self, graph):
        self.graph = graph
        self.weights = {i.name: i for i in graph.initializer}  # read as arrays only if quantised
        self.nodes, self.constants, self.rows = [], [], {}
        self.const("pt_zero", np.array(0.0, np.float32))
        self.const("pt_one", np.array(1.0, np.float32))
        self.const("pt_step", np.array(1 / 255, np.float32))
        self.const("pt_tiny", np.array(1e-8, np.float32))
        self.const("pt_column", np.array([-1, 1], np.int64))
        self.const("pt_first", np.array([0], np.int64))
        self.const("pt_last", np.array([-1], np.int64))

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.constants.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        from onnx import helper

        domain = MS_DOMAIN if op == "MatMulIntegerToFloat" else ""
        self.nodes.append(helper.make_node(op, inputs, [output], domain=domain, **attrs))
        return output

    def is_weight_matmul(self, node) -> bool:
        from onnx import TensorProto

        found = self.weights.get(node.input[1]) if node.op_type == "MatMul" else None
        return found is not None and len(found.dims) == 2 and found.data_type == TensorProto.FLOAT

    def quantize_rows(self, x: str, k: int, p: str):
        """(uint8 rows, row scales [M, 1], row zero points [M, 1], leading dims) of ``x``
        reshaped to [M, K]; each row's range spans its min and max, and always 0."""
        if x in self.rows:
            return self.rows[x]
        from onnx import TensorProto

        n = self.node
        lead = n("Slice", [n("Shape", [x], p + "shape"), "pt_first", "pt_last"], p + "lead")
        rows = n("Reshape", [x, self.const(p + "k", np.array([-1, k], np.int64))], p + "rows")
        low = n(
            "Min", [n("ReduceMin", [rows], p + "min0", axes=[1], keepdims=0), "pt_zero"], p + "min"
        )
        high = n(
            "Max", [n("ReduceMax", [rows], p + "max0", axes=[1], keepdims=0), "pt_zero"], p + "max"
        )
        span = n("Mul", [n("Sub", [high, low], p + "span"), "pt_step"], p + "s0")
        scale = n("Max", [span, "pt_tiny"], p + "scale")
        zero = n("Round", [n("Neg", [n("Div", [low, scale], p + "z0")], p + "z1")], p + "zero")
        zero_u8 = n("Cast", [zero], p + "zero_u8", to=TensorProto.UINT8)
        quantized = n("QuantizeLinear", [rows, scale, zero_u8], p + "q", axis=0)
        column = (n("Reshape", [scale, "pt_column"], p + "s_col"),
                  n("Reshape", [zero, "pt_column"], p + "z_col"))  # fmt: skip
        self.rows[x] = (quantized, *column, lead)
        return self.rows[x]

    def matmul(self, node, p: str) -> None:
        """``node`` (X @ W) as per-row uint8 X times per-column int8 W, back to fp32."""
        from onnx import numpy_helper

        weight = numpy_helper.to_array(self.weights[node.input[1]]).astype(np.float32)
        k, cols = weight.shape
        quantized, scale, column_sums = quantize_weight(weight)
        q, row_scale, row_zero, lead = self.quantize_rows(node.input[0], k, p)
        n = self.node
        product = n("MatMulIntegerToFloat", [q, self.const(p + "wq", quantized), "pt_one",
                    self.const(p + "ws", scale)], p + "yf")  # fmt: skip
        zeros = n("Mul", [row_zero, self.const(p + "colsum", column_sums)], p + "zc")
        rows = n("Mul", [n("Sub", [product, zeros], p + "y0"), row_scale], p + "y1")
        shape = n(
            "Concat", [lead, self.const(p + "n", np.array([cols], np.int64))], p + "out", axis=0
        )
        n("Reshape", [rows, shape], node.output[0])

    def run(self) -> int:
        count = 0
        for node in self.graph.node:
            if self.is_weight_matmul(node):
                self.matmul(node, f"int8tok{count}_")
                count += 1
            else:
                self.nodes.append(node)
        used = {name for node in self.nodes for name in node.input}
        kept = [i for i in self.graph.initializer if i.name in used]
        added = [c for c in self.constants if c.name in used]
        self.graph.ClearField("node")
        self.graph.node.extend(self.nodes)
        self.graph.ClearField("initializer")
        self.graph.initializer.extend(kept + added)
        return count


def quantize_per_token(fp32: Path, folder: Path) -> Path:
    """``folder``: a copy of the fp32 form's folder (tokenizer, labels, preprocessing) whose
    ``model.onnx`` has every weight MatMul in per-token int8 (the other operators as they were).
    Raises ValueError when the graph has no such MatMul (nothing to quantise)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(Path(fp32) / MODEL_FILE))
    if not _Rewrite(model.graph).run():  # refused before anything is written
        raise ValueError(f"{fp32 / MODEL_FILE}: no MatMul with a weight to quantise")
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    shutil.copytree(fp32, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MODEL_FILE))
    onnx.save(model, str(Path(folder) / MODEL_FILE))
    return folder
