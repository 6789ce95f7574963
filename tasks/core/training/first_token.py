"""The last encoder layer, computed only where the classification head reads it.

Why: a BERT-family sequence classifier reads one hidden state of the last layer, the first
token's (BERT's pooler and the RoBERTa / XLM-R / ELECTRA heads take ``[:, 0]``). In that
layer every position's keys and values still feed the first token's attention, but what
follows the attention (its output projection, the feed-forward block, their dropouts and
layer norms) works position by position, so computing it for the first token alone gives the
same logits and gradients. On MiniLM-L6 that drops 3 of the 36 encoder Linears' work (forward
and backward) with their GELU and norms: a CPU LoRA step 1.10x faster alone, the benchmark's
engine 1.06x (docs/benchmarks.md); scoring and the exported ONNX graph gain alike.

Only the heads in ``FIRST_TOKEN_HEADS``, whose last layer has the ``attention.output(hidden,
residual)`` block the cut goes in front of; any other model is left as it is. A forward that
asks for hidden states (``output_hidden_states``: monitoring's mean-pooled features) runs
uncut, so every returned state is whole.
"""

from __future__ import annotations

import threading

from torch import nn

# Sequence classifiers whose head reads only position 0 of the last layer (transformers'
# modeling files: BertPooler ``hidden_states[:, 0]``, the others' ``features[:, 0, :]``).
FIRST_TOKEN_HEADS = frozenset(
    {
        "BertForSequenceClassification",
        "RobertaForSequenceClassification",
        "XLMRobertaForSequenceClassification",
        "CamembertForSequenceClassification",
        "ElectraForSequenceClassification",
    }
)
_MARK = "_loraflow_first_token"


def _unwrap(model) -> nn.Module:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _marked(module: nn.Module) -> list[int]:
    """Ids of this module's forward pre-hooks that ``cut_last_layer`` registered."""
    return [k for k, hook in module._forward_pre_hooks.items() if getattr(hook, _MARK, False)]


def cut_block(model) -> nn.Module | None:
    """The last layer's post-attention block the cut goes in front of, or None (not a known
    head, or not the layout expected). ``model``: the transformers model or a PEFT wrapper."""
    base = _unwrap(model)
    if type(base).__name__ not in FIRST_TOKEN_HEADS:
        return None
    encoder = getattr(getattr(base, base.base_model_prefix, None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not layers:
        return None
    block = getattr(getattr(layers[-1], "attention", None), "output", None)
    return block if isinstance(block, nn.Module) else None


def cut_last_layer(model) -> bool:
    """Compute the last layer past its attention for the first token only (see the module
    docstring); True when the model has the cut (now or already), False when it is not one
    it applies to. The hooks stay with the model, also through ``merge_and_unload`` and
    ``copy.deepcopy``."""
    block = cut_block(model)
    if block is None:
        return False
    if _marked(block):
        return True
    base = _unwrap(model)
    # Per thread: a service may score on one thread while another asks for hidden states.
    state = threading.local()

    def decide(module, args, kwargs):
        wanted = kwargs.get("output_hidden_states")
        if wanted is None:
            wanted = getattr(module.config, "output_hidden_states", False)
        state.cut = not wanted

    def first_token(module, args):
        if not getattr(state, "cut", False) or len(args) != 2:
            return None
        hidden, residual = args
        # Contiguous: on a strided slice each Linear broadcast its weight per example (bmm)
        return hidden[:, :1].contiguous(), residual[:, :1].contiguous()

    for hook in (decide, first_token):
        setattr(hook, _MARK, True)
    base.register_forward_pre_hook(decide, with_kwargs=True)
    block.register_forward_pre_hook(first_token)
    return True


def uncut_last_layer(model) -> bool:
    """Undo ``cut_last_layer`` (the model computes every position again); True if it had the
    cut. For benchmarks whose contenders must run the model as transformers ships it."""
    block = cut_block(model)
    if block is None or not _marked(block):
        return False
    for module in (_unwrap(model), block):
        for key in _marked(module):
            del module._forward_pre_hooks[key]
            module._forward_pre_hooks_with_kwargs.pop(key, None)
    return True
