"""The ``onnx-int8-token`` form: per-token uint8 activations times per-column int8 weights, in
ONNX Runtime, checked against numpy on a one-MatMul graph and against the fp32 export of a
tiny real BERT (close logits, one answer per text whatever its batch, no saturating weights)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tasks.core.registry.serving_form import build_form, export_merged, quantize_int8
from tasks.core.registry.token_int8 import MODEL_FILE, quantize_per_token, quantize_weight
from tasks.core.serving.runtime import OnnxClassifier
from tests.tiny import build_tiny_bert, sentiment_rows


def one_matmul(folder, weight: np.ndarray, bias: bool = True):
    """A graph X[b, t, K] @ W (+ bias), as torch.onnx exports a Linear, saved in ``folder``."""
    k, n = weight.shape
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw" if bias else "y"])]
    inits = [numpy_helper.from_array(weight.astype(np.float32), "w")]
    if bias:
        nodes.append(helper.make_node("Add", ["xw", "b"], ["y"]))
        inits.append(numpy_helper.from_array(np.linspace(-1, 1, n).astype(np.float32), "b"))
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "t", n])], inits,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(folder / MODEL_FILE))
    return folder


def run(folder, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(folder / MODEL_FILE), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def reference(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The same arithmetic in numpy: each row's uint8 range spans its min, max and 0."""
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    low, high = np.minimum(rows.min(1), 0), np.maximum(rows.max(1), 0)
    scale = np.maximum((high - low) / 255, 1e-8)
    zero = np.round(-low / scale)
    q = np.clip(np.round(rows / scale[:, None]) + zero[:, None], 0, 255)
    wq, ws, _ = quantize_weight(weight)
    y = ((q - zero[:, None]) * scale[:, None]) @ (wq.astype(np.float64) * ws)
    return y.reshape(*x.shape[:-1], weight.shape[1])


def test_a_matmul_is_rows_of_uint8_times_columns_of_int8_as_numpy_computes_it(tmp_path):
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(48, 20)).astype(np.float32)
    x = rng.normal(size=(3, 5, 48)).astype(np.float32)
    x[0] += 4.0  # all positive rows (zero point 0) beside mixed ones
    x[1, :, 7] *= 30  # an outlier channel, as MiniLM's feed-forward inputs have
    fp32 = one_matmul(tmp_path / "fp32", weight)
    out = quantize_per_token(fp32, tmp_path / "int8")
    bias = np.linspace(-1, 1, 20)
    got = run(out, x)
    np.testing.assert_allclose(got, reference(x, weight) + bias, rtol=1e-4, atol=1e-4)
    exact = x.astype(np.float64) @ weight + bias
    assert np.abs(got - exact).max() < 0.05 * np.abs(exact).max()  # close to fp32
    # Each row is quantised alone: a row's output does not change with its neighbours.
    np.testing.assert_allclose(run(out, x[2:3, 1:2]), got[2:3, 1:2], rtol=1e-6, atol=1e-6)
    ops = [node.op_type for node in onnx.load(str(out / MODEL_FILE)).graph.node]
    assert "MatMul" not in ops and ops.count("MatMulIntegerToFloat") == 1


def test_weights_use_seven_bits_so_avx2_pair_sums_cannot_saturate():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(64, 9)).astype(np.float32)
    quantized, scale, column_sums = quantize_weight(weight)
    assert quantized.dtype == np.int8 and quantized.min() >= -64 and quantized.max() <= 63
    assert (np.abs(quantized).max(0) == 63).all()  # each column's largest on the top step
    assert np.abs(quantized * scale - weight).max() <= scale.max() / 2 + 1e-7
    np.testing.assert_allclose(column_sums, quantized.sum(0) * scale, rtol=1e-6)
    assert 2 * 255 * 64 < 2**15  # the largest uint8 x int8 pair sum fits int16


def test_a_graph_without_weight_matmuls_is_refused(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])  # fmt: skip
    (tmp_path / "fp32").mkdir()
    onnx.save(helper.make_model(graph), str(tmp_path / "fp32" / MODEL_FILE))
    with pytest.raises(ValueError, match="no MatMul with a weight"):
        quantize_per_token(tmp_path / "fp32", tmp_path / "int8")


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """A tiny BERT exported to ONNX fp32, and its int8 forms (per token, ONNX Runtime's)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root = tmp_path_factory.mktemp("token_int8")
    base = build_tiny_bert(root / "base", dropout=0.0, seed=3)
    model = AutoModelForSequenceClassification.from_pretrained(str(base)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    fp32 = export_merged(model, tokenizer, ["neg", "pos"], 32, root / "onnx-fp32")
    token = build_form("onnx-int8-token", fp32, root)
    return fp32, token, quantize_int8(fp32, root / "onnx-int8")


def test_the_tiny_bert_form_is_close_to_fp32_and_carries_the_folder(forms):
    fp32, token, _ = forms
    texts = [text for _, text in sentiment_rows(64, seed=5)]
    exact = OnnxClassifier(fp32).logits(texts)
    got = OnnxClassifier(token).logits(texts)
    assert np.abs(got - exact).max() < 0.05 * np.abs(exact).max()
    graph = onnx.load(str(token / MODEL_FILE)).graph
    ops = [node.op_type for node in graph.node]
    fp32_ops = [node.op_type for node in onnx.load(str(fp32 / MODEL_FILE)).graph.node]
    assert ops.count("MatMulIntegerToFloat") == 12  # 2 layers x (q, k, v, out, ffn in, ffn out)
    assert ops.count("QuantizeLinear") == 8  # q, k and v share their input's quantisation
    assert ops.count("MatMul") == fp32_ops.count("MatMul") - 12  # attention's stay fp32
    weights = [
        numpy_helper.to_array(i) for i in graph.initializer if i.data_type == TensorProto.INT8
    ]
    assert len(weights) == 12 and all(w.min() >= -64 and w.max() <= 63 for w in weights)
    labels = json.loads((token / "labels.json").read_text())
    assert labels["labels"] == ["neg", "pos"] and (token / "tokenizer.json").is_file()


def test_a_texts_logits_do_not_depend_on_its_batch_with_a_range_per_token(forms):
    """ONNX Runtime's dynamic int8 takes one range per batch, so a text's answer moves with
    its neighbours; with a range per token it does not (up to fp32 rounding)."""
    fp32, token, per_batch = forms
    text = "the film was good"
    batch = [text, "awful dull cold weak grim sad poor bad the plot was very bad and the story"]

    def moved(folder):
        classifier = OnnxClassifier(folder)
        return np.abs(classifier.logits([text])[0] - classifier.logits(batch)[0]).max()

    still = max(moved(fp32), moved(token))
    assert still < 1e-5 and moved(per_batch) > 10 * max(still, 1e-6)
