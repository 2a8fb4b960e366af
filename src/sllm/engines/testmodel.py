"""`sllm make-test-model DIR`: a tiny Llama-style checkpoint made here, for tests and demos.

Nothing is downloaded. A byte-level BPE tokenizer is trained on a short built-in text
with the `tokenizers` library, and a small `LlamaForCausalLM` with seeded random weights
is saved as safetensors next to it. The output is a real checkpoint that transformers
loads like any other: the real engine's loading, streaming and sampling code runs on it
end to end, in a few seconds on a CPU. Its text is gibberish; its token counts are real.

It also writes ``catalog.json``, a model catalog naming the checkpoint (files, sizes and
sha256) for MODEL_CATALOG.

Needs the optional extra ``torch`` (torch, transformers, tokenizers, safetensors).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

TEST_MODEL_NAME = "tiny-llama"
# Small enough to load in well under a second on a CPU; large enough (a few MB) that
# loading and eviction are measurable.
HIDDEN_SIZE = 128
LAYERS = 4
HEADS = 4
KV_HEADS = 2
VOCAB_SIZE = 1024
CONTEXT = 1024

_CORPUS = """\
Serverless inference loads a model on demand and keeps it warm while it is used.
The scheduler weighs a warm worker with a queue against a cold start on an idle one.
A checkpoint may sit on the GPU, in host memory, on a local disk or in a remote store.
Hello, world! How are you today? The quick brown fox jumps over the lazy dog.
Once upon a time there was a small language model that lived in a test directory.
It answered every question with great confidence and very little sense.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Punctuation: , . ; : ! ? ( ) [ ] { } " '.
user: what is the capital of France? assistant: the capital of France is Paris.
"""


def make_test_model(directory: str | Path, seed: int = 0) -> dict[str, Any]:
    """Write the tiny checkpoint and its catalog into `directory`; return the catalog."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.splitlines() * 4, trainer)
    fast_tokenizer: Any = PreTrainedTokenizerFast  # untyped library class
    fast = fast_tokenizer(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=HIDDEN_SIZE * 2,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=CONTEXT,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    catalog = {"models": [catalog_entry(out, TEST_MODEL_NAME, params / 1e9)]}
    (out / "catalog.json").write_text(json.dumps(catalog, indent=2) + "\n", encoding="utf-8")
    return catalog


def catalog_entry(directory: Path, name: str, params_b: float) -> dict[str, Any]:
    """A catalog entry for every checkpoint file in `directory`, with sizes and sha256."""
    files = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if path.name == "catalog.json" or path.name.startswith("."):
            continue
        data = path.read_bytes()
        files.append(
            {
                "path": path.relative_to(directory).as_posix(),
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return {
        "name": name,
        "source": str(directory.resolve()),
        "engine": "transformers",
        "params_b": params_b,
        "options": {"dtype": "float32"},
        "files": files,
    }
