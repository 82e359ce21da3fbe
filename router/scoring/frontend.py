"""The P2L input side without torch: tokenizer, exact rendering, token ids, token counts.

Shared by the in-process model (``P2LModel`` extends :class:`P2LInputs`) and the remote
scorer, whose router process must not import torch: the tokenizer is transformers'
``PreTrainedTokenizerFast`` (the Rust ``tokenizers`` backend), which loads without torch,
unlike ``AutoTokenizer`` (it imports torch through the model registry).

Why transformers stays a dependency of a torch-free replica, rather than ``tokenizers``
alone or the engine's ``/tokenize``: the scorer input is the checkpoint's chat template
rendered exactly as P2L was trained (``apply_chat_template``: transformers' Jinja
environment and its template conventions), which ``tokenizers`` does not have; and the
router counts prompt tokens on every reservation, including when the engine is down
(``on_scorer_down: cheapest`` still reserves budget), so a network round trip to
``/tokenize`` per request would both cost latency and couple budgets to the engine's
health. transformers without torch imports in about half a second and pulls no CUDA.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router.scoring.inputs import render as render_input
from router.scoring.local import has_local_scorer
from router.scoring.types import ModelLoadError

# Text longer than this is counted in pieces (see ``P2LInputs.count_tokens``).
COUNT_CHUNK_CHARS = 64 * 1024


def cache_key(text: str) -> bytes:
    """The cache key of one exact scorer input text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def split_before_spaces(text: str, size: int) -> list[str]:
    """``text`` in pieces of about ``size`` characters, each cut just before a space."""
    pieces, i, n = [], 0, len(text)
    while i < n:
        j = min(n, i + size)
        if j < n:
            k = text.rfind(" ", i + 1, j)
            if k > i:
                j = k
        pieces.append(text[i:j])
        i = j
    return pieces


def load_tokenizer(
    folder: Path, training_config: dict[str, Any] | None, *, torch_free: bool = False
) -> Any:
    """The checkpoint's tokenizer, set up for P2L (left truncation, chat template, CLS).

    ``torch_free``: the fast tokenizer class straight from ``tokenizer.json`` (no torch
    import); else ``AutoTokenizer`` (the class the checkpoint names)."""
    if torch_free:
        if not has_local_scorer():
            # transformers then logs "PyTorch was not found..." as advice at import:
            # expected on a remote-scoring replica, so silenced (an operator's setting wins).
            os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        from transformers.tokenization_utils_fast import PreTrainedTokenizerFast as cls
    else:
        from transformers import AutoTokenizer as cls
    try:
        tokenizer = cls.from_pretrained(str(folder))
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer in {folder}: {exc}") from exc
    tokenizer.truncation_side = "left"
    tokenizer.padding_side = "right"
    tokenizer.model_max_length = 1 << 30  # we truncate ourselves; silence the length warning
    if not tokenizer.chat_template and training_config and training_config.get("chat_template"):
        tokenizer.chat_template = training_config["chat_template"]
    if not tokenizer.chat_template:
        raise ModelLoadError(f"the tokenizer in {folder} has no chat template")
    if not tokenizer.cls_token or tokenizer.convert_tokens_to_ids(tokenizer.cls_token) is None:
        raise ModelLoadError(f"the tokenizer in {folder} has no cls_token (P2L uses <|cls|>)")
    return tokenizer


class P2LInputs:
    """A P2L checkpoint's input side: model list, head type and the exact token ids."""

    def __init__(
        self,
        *,
        tokenizer: Any,
        model_list: Sequence[str],
        head_type: str,
        max_length: int = 8192,
        source: str = "",
    ) -> None:
        self.model_list: tuple[str, ...] = tuple(model_list)
        self.head = head_type
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.source = source
        self._cls_id = int(tokenizer.convert_tokens_to_ids(tokenizer.cls_token))
        # Counting has a Rust tokenizer of its own: the shared one carries the truncation
        # the last long scorer input set (``encode``) until the next call clears it, so
        # counts taken meanwhile (another request's reservation, on another thread) were
        # cut at ``max_length`` per piece.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._counter: Any = None
        if backend is not None:
            from tokenizers import Tokenizer

            self._counter = Tokenizer.from_str(backend.to_str())
            self._counter.no_truncation()
            self._counter.no_padding()

    def render(self, messages: list[dict]) -> str:
        """The exact scorer input text for these chat messages (InvalidRequestError if bad)."""
        return render_input(self.tokenizer, messages)

    def count_tokens(self, text: str) -> int:
        """Tokens of plain text with the scorer's tokenizer (no special tokens added).

        On the request path (every reservation), so it calls the Rust tokenizer directly
        when there is one: the Python wrapper costs more than the tokenization."""
        backend = self._counter
        if backend is None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(text) <= COUNT_CHUNK_CHARS:
            return len(backend.encode(text, add_special_tokens=False))
        # ``encode`` holds the GIL for the whole text (seconds for megabytes), stalling the
        # event loop even from a worker thread; ``encode_batch`` releases it. Cut before a
        # space, byte-level BPE pre-tokenizes the pieces exactly as the whole text.
        pieces = split_before_spaces(text, COUNT_CHUNK_CHARS)
        return sum(len(e) for e in backend.encode_batch(pieces, add_special_tokens=False))

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids truncated from the LEFT to max_length (the CLS stays), and full lengths."""
        tok = self.tokenizer
        ids = tok(list(texts), truncation=False)["input_ids"]
        full = [len(x) for x in ids]
        long = [i for i, n in enumerate(full) if n > self.max_length]
        if long:
            cut = tok([texts[i] for i in long], truncation=True, max_length=self.max_length)[
                "input_ids"
            ]
            for i, row in zip(long, cut, strict=True):
                ids[i] = row
        return ids, full

    def cls_positions(self, ids: Sequence[Sequence[int]]) -> list[int]:
        """Index of the (last) CLS token in each row; ValueError when a row has none."""
        positions = []
        for r, row in enumerate(ids):
            try:
                positions.append(len(row) - 1 - list(reversed(row)).index(self._cls_id))
            except ValueError:
                raise ValueError(f"scorer input row {r} has no CLS token") from None
        return positions
