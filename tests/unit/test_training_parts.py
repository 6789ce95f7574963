"""The engine's parts, each on its own: config identity, SFT labels, batches, checkpoints."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tasks.core.config.train import LoraSpec, TrainSpec
from tasks.core.errors import TrainingInputError
from tasks.core.training import checkpoints, int8_base
from tasks.core.training.batches import epoch_batches, make_collator
from tasks.core.training.loop import CAUSAL_FORWARD, plan_steps
from tasks.core.training.precision import choose, cpu_bf16_unit, cpu_flags, resolve
from tasks.core.training.setup import mixed_precision, precision_choice
from tasks.core.training.sft import IGNORE, encode_pair, tokenize_sft
from tests.tiny import build_tiny_llama


@pytest.fixture(scope="module")
def decoder_tokenizers(tmp_path_factory):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("decoders")
    return {
        name: AutoTokenizer.from_pretrained(build_tiny_llama(root / name, chat_template=chat))
        for name, chat in (("chat", True), ("plain", False))
    }


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "same_identity"),
    [
        ({"work_pool": "gpu"}, True),
        ({"launcher": "in-process"}, True),
        ({"checkpoint_steps": 7, "logging_steps": 3, "eval_steps": 5}, True),
        ({"learning_rate": 1e-3}, False),
        ({"precision": "bf16"}, False),
        ({"task": "causal-lm"}, False),
    ],
)
def test_identity_ignores_only_where_and_how_often(change, same_identity):
    assert (TrainSpec(**change).identity() == TrainSpec().identity()) is same_identity


def test_precision_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("CPU-only expectations")
    # auto follows this CPU: bf16 autocast where it has the unit, else fp32; int8 (opt-in) is
    # not autocast, so accelerate runs fp32 ("no") for it
    expected = "bf16" if cpu_bf16_unit(cpu_flags()) else "no"
    assert mixed_precision(TrainSpec()) == expected
    assert mixed_precision(TrainSpec(precision="fp32")) == "no"
    assert mixed_precision(TrainSpec(precision="bf16")) == "bf16"
    with pytest.raises(TrainingInputError, match="train.precision: fp16 needs a CUDA GPU"):
        mixed_precision(TrainSpec(precision="fp16"))
    if int8_base.available():
        assert precision_choice(TrainSpec(precision="int8")).mode == "int8"
        assert mixed_precision(TrainSpec(precision="int8")) == "no"


AMX = {"avx2", "amx_bf16", "avx512_bf16"}
NO_BF16 = "without a native bf16 unit"


@pytest.mark.parametrize(
    ("requested", "cuda", "cuda_bf16", "flags", "int8", "mode", "reason"),
    [
        ("auto", False, False, AMX, True, "bf16", "(amx_bf16)"),
        ("auto", False, False, {"avx2", "avx512_bf16"}, True, "bf16", "(avx512_bf16)"),
        ("auto", False, False, {"avx2", "avx512f"}, True, "no", NO_BF16),  # int8: opt-in
        ("auto", False, False, {"avx2", "avx512f"}, False, "no", NO_BF16),
        ("auto", False, False, set(), False, "no", NO_BF16),
        ("auto", True, True, set(), False, "bf16", "CUDA GPU with bf16"),
        ("auto", True, False, {"amx_bf16"}, False, "fp16", "CUDA GPU without bf16"),
        ("fp32", False, False, {"amx_bf16"}, True, "no", "configured: fp32"),
        ("bf16", False, False, set(), True, "bf16", "configured: bf16"),
        ("int8", False, False, AMX, True, "int8", "configured: int8"),
    ],
)
def test_auto_precision_follows_the_hardware(requested, cuda, cuda_bf16, flags, int8, mode, reason):
    choice = choose(requested, cuda, cuda_bf16, frozenset(flags), int8)
    assert choice.mode == mode and reason in choice.reason
    assert choice.accelerate == ("no" if mode == "int8" else mode)
    assert choice.params("train") == {
        "train.resolved_precision": mode,
        "train.precision_reason": choice.reason,
    }


@pytest.mark.parametrize(("cuda", "int8"), [(True, False), (False, False)])
def test_int8_is_refused_without_the_x86_engine_or_on_a_gpu(cuda, int8):
    with pytest.raises(TrainingInputError, match="int8 needs a CPU with PyTorch's x86 quantized"):
        choose("int8", cuda, cuda, frozenset({"avx2"}), int8)


def test_evaluation_never_resolves_to_int8():
    """int8 is a training choice: evaluation scores the stored model at fp32 or bf16."""
    assert resolve("auto").mode in ("no", "bf16", "fp16")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16 avx2\n\nprocessor\t: 1\n")
    assert cpu_bf16_unit(cpu_flags(str(info))) == "avx512_bf16"
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_bf16_training_keeps_lora_weights_and_their_gradients_fp32():
    from transformers import BertConfig, BertForSequenceClassification

    from tasks.core.training.modeling import add_lora
    from tasks.core.training.setup import make_accelerator

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=37,
    )  # fmt: skip
    model = add_lora(BertForSequenceClassification(config), LoraSpec(r=4))
    acc = make_accelerator(TrainSpec(precision="bf16"))
    batch = {"input_ids": torch.randint(0, 30, (4, 7)), "labels": torch.tensor([0, 1, 0, 1])}
    with acc.autocast():
        out = model(**batch)
    assert out.logits.dtype == torch.bfloat16  # the matmuls ran in bf16
    out.loss.float().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable)


@pytest.mark.parametrize(
    ("spec", "batches", "expected"),
    [
        ({"epochs": 1}, 10, (10, 10)),
        ({"epochs": 2.5}, 10, (10, 25)),
        ({"epochs": 1, "gradient_accumulation_steps": 4}, 10, (3, 3)),
        ({"epochs": 3, "max_steps": 7}, 10, (10, 7)),
    ],
)
def test_step_budget(spec, batches, expected):
    assert plan_steps(TrainSpec(**spec), batches) == expected


def test_every_process_takes_a_share_of_each_micro_batch():
    from tasks.core.training.loop import shard

    assert [shard(list(range(5)), r, 2) for r in (0, 1)] == [([0, 2, 4], True), ([1, 3], True)]
    assert shard([7], 1, 2) == ([7], False)  # nothing left: re-read one example, weight 0


# --- model --------------------------------------------------------------------------------


def test_target_modules_are_inferred_or_checked(tiny_bert_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2LMHeadModel

    from tasks.core.training.modeling import add_lora, infer_target_modules

    bert = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    assert infer_target_modules(bert) == ["query", "value"]
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    assert infer_target_modules(gpt2) == ["c_attn"]
    gpt2.config.model_type = "brand-new-arch"  # no table entry: every linear layer
    assert infer_target_modules(gpt2) == "all-linear"
    with pytest.raises(
        TrainingInputError, match="match no layer of bert; linear layers here:.*query"
    ):
        add_lora(bert, LoraSpec(target_modules=("q_proj",)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="QLoRA does run here")
def test_qlora_without_a_gpu_is_refused_clearly():
    from tasks.core.training.modeling import quantization_config

    assert quantization_config(LoraSpec()) is None
    with pytest.raises(TrainingInputError, match="4bit needs a CUDA GPU"):
        quantization_config(LoraSpec(quantize_base="4bit"))


# --- SFT data -----------------------------------------------------------------------------


def test_chat_template_pairs_train_on_the_answer_only(decoder_tokenizers):
    tok = decoder_tokenizers["chat"]
    pair = encode_pair(tok, "review : a good film", "positive", max_length=64)
    tokens = tok.convert_ids_to_tokens(pair["input_ids"])
    assert tokens[:2] == ["<|user|>", "review"] and tokens[-3:] == [
        "<|assistant|>",
        "positive",
        "</s>",
    ]
    taught = [t for t, label in zip(tokens, pair["labels"], strict=True) if label != IGNORE]
    assert taught == ["positive", "</s>"]


def test_plain_tokenizer_pairs_append_eos(decoder_tokenizers):
    tok = decoder_tokenizers["plain"]
    pair = encode_pair(tok, "review : a bad plot", "negative", max_length=64)
    tokens = tok.convert_ids_to_tokens(pair["input_ids"])
    assert tokens[-2:] == ["negative", "</s>"]
    assert pair["labels"][-2:] == pair["input_ids"][-2:]
    assert set(pair["labels"][:-2]) == {IGNORE}
    cut = encode_pair(tok, "review : a bad plot", "negative", max_length=3)
    assert len(cut["input_ids"]) == 3 and set(cut["labels"]) == {IGNORE}


def test_sft_data_errors_name_what_is_wrong(decoder_tokenizers):
    from datasets import Dataset

    tok = decoder_tokenizers["plain"]
    with pytest.raises(TrainingInputError, match="missing \\['response'\\]"):
        tokenize_sft(Dataset.from_list([{"prompt": "a", "answer": "b"}]), tok, 16)
    long = Dataset.from_list([{"prompt": "review : " + "good " * 20, "response": "positive"}])
    with pytest.raises(TrainingInputError, match="raise it"):
        tokenize_sft(long, tok, 8)


# --- batches ------------------------------------------------------------------------------


def test_epoch_batches_are_a_pure_function_of_seed_and_epoch():
    lengths = [random.Random(i).randint(3, 60) for i in range(1000)]
    first = epoch_batches(lengths, 32, seed=1, epoch=0)
    assert first == epoch_batches(lengths, 32, seed=1, epoch=0)
    assert first != epoch_batches(lengths, 32, seed=1, epoch=1)
    assert sorted(i for b in first for i in b) == list(range(1000))
    assert len(first) == 32 and max(len(b) for b in first) == 32


def test_grouping_by_length_removes_most_padding():
    rng = np.random.default_rng(0)
    lengths = rng.lognormal(2.5, 0.5, 4000).astype(int).clip(3, 128).tolist()

    def padding_share(batches):
        padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
        return 1 - sum(lengths) / padded

    grouped = padding_share(epoch_batches(lengths, 32, 0, 0, group_by_length=True))
    shuffled = padding_share(epoch_batches(lengths, 32, 0, 0, group_by_length=False))
    assert grouped < 0.05 < 0.3 < shuffled


def test_packed_batches_restart_positions_per_example(decoder_tokenizers):
    collate = make_collator("causal-lm", decoder_tokenizers["plain"], packing=True)
    batch = collate(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]  # no loss across the boundary
    assert "attention_mask" not in batch


def test_packed_examples_do_not_attend_to_each_other(tmp_path):
    """The engine's decoder forward on a packed row gives each example the logits it gets alone
    (with the default KV cache on, transformers would let the second attend to the first)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(build_tiny_llama(tmp_path / "llama")).eval()
    first, second = [5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 16]
    packed = make_collator("causal-lm", None, packing=True)(
        [{"input_ids": first, "labels": first}, {"input_ids": second, "labels": second}]
    )
    with torch.no_grad():
        logits = model(**packed, **CAUSAL_FORWARD).logits[0]
        alone = [model(input_ids=torch.tensor([ids])).logits[0] for ids in (first, second)]
    torch.testing.assert_close(logits, torch.cat(alone), rtol=1e-4, atol=1e-4)


# --- checkpoints --------------------------------------------------------------------------


def tiny_training_state():
    model = torch.nn.Linear(4, 2)
    model.bias.requires_grad_(False)
    optimizer = torch.optim.AdamW([model.weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    model(torch.ones(3, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def test_checkpoint_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model, optimizer, scheduler = tiny_training_state()
    state = checkpoints.TrainState(step=3, epoch=1, batch_in_epoch=2, samples=96, elapsed_s=1.5)
    path = checkpoints.save_checkpoint(tmp_path, state, model, optimizer, scheduler)
    expected = (torch.rand(3), random.random(), np.random.rand())

    fresh, opt2, sched2 = tiny_training_state()
    torch.nn.init.zeros_(fresh.weight)
    restored = checkpoints.load_checkpoint(path, fresh, opt2, sched2)
    assert restored == state
    assert torch.equal(fresh.weight, model.weight)
    assert opt2.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    assert sched2.last_epoch == scheduler.last_epoch
    assert (torch.rand(3), random.random(), np.random.rand()) == (
        pytest.approx(expected[0]),
        expected[1],
        expected[2],
    )


def test_only_complete_checkpoints_count_and_old_ones_go(tmp_path):
    model, optimizer, scheduler = tiny_training_state()
    for step in (2, 4, 6):
        checkpoints.save_checkpoint(
            tmp_path, checkpoints.TrainState(step=step), model, optimizer, scheduler
        )
    (tmp_path / ".tmp-step-00000008-123").mkdir()  # a write the process did not finish
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == [
        "step-00000004",
        "step-00000006",
    ]
    assert checkpoints.read_state(checkpoints.latest_checkpoint(tmp_path)).step == 6
    other = torch.nn.Linear(5, 2)
    with pytest.raises(ValueError, match="does not fit this model"):
        checkpoints.load_checkpoint(
            checkpoints.latest_checkpoint(tmp_path), other, optimizer, scheduler
        )


def test_frozen_linears_stored_in_bf16_give_the_autocast_results_exactly():
    import copy

    from transformers import BertConfig, BertForSequenceClassification

    from tasks.core.training.modeling import add_lora
    from tasks.core.training.setup import frozen_linears_to_bf16

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37,
    )  # fmt: skip
    plain = add_lora(BertForSequenceClassification(config), LoraSpec(r=4, dropout=0.0))
    for name, param in plain.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.1)  # a LoRA branch that contributes
    cast = copy.deepcopy(plain)
    assert frozen_linears_to_bf16(cast) > 0
    batch = {"input_ids": torch.randint(0, 30, (4, 9)), "labels": torch.tensor([0, 1, 1, 0])}
    results = []
    for model in (plain, cast):
        model.eval()  # no dropout: both see the same computation
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.float().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.item(), grads))
        assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert results[0][0] == results[1][0]
    for name, grad in results[0][1].items():
        assert torch.equal(grad, results[1][1][name]), name
