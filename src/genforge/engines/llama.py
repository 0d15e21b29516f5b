"""llama.cpp through llama-cpp-python, with batched decoding. Runs inside the engine worker process.

Several text requests share one llama.cpp context: each is a sequence with its own KV-cache slot
and its own sampler (and seed); every step decodes one token of every active sequence in a single
`llama_decode` call. One engine thread owns the cores (see docs/benchmarks.md), so N concurrent
requests cost far less than N times one. A single request takes the same path, alone in its batch.
"""

from __future__ import annotations

import codecs
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from genforge.engines import structured
from genforge.engines.base import (
    BatchingEngine,
    Done,
    EngineEvent,
    EngineOutput,
    Failed,
    GenerationJob,
    ResolvedModel,
    TextFacts,
    Update,
    params_of,
)
from genforge.engines.pages import anonymous_ranges, release_zero_pages
from genforge.engines.params import TextSettings
from genforge.errors import Cancelled, EngineFailed, GenforgeError, InvalidRequest, ModelUnavailable

try:  # the text extra; its absence is reported when a model is loaded
    import llama_cpp
    from llama_cpp import _internals
except ImportError:  # pragma: no cover - depends on the installation
    llama_cpp = None  # type: ignore[assignment]  # the text extra is optional: load() checks for None
from llguidance import LLMatcher, LLTokenizer

if TYPE_CHECKING:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.llama_types import ChatCompletionRequestMessage, ChatCompletionTool

    from genforge.config import Settings
    from genforge.contenttypes.text import TextSettings

PREFILL_CHUNK = 512  # prompt tokens per llama_decode call (the context's n_batch)
FORCED_MAX = 64  # tokens a grammar forces, decoded together in one step (the rest at the next)
log = logging.getLogger(__name__)
KV_CACHE_TYPES = {"f16": "GGML_TYPE_F16", "q8_0": "GGML_TYPE_Q8_0"}  # setting -> llama_cpp's ggml type


@dataclass
class Sequence:
    """One request being generated in a slot of the shared context."""

    job: GenerationJob
    slot: int
    prompt: list[int]  # what is evaluated before the first sampled token (with the tokens a grammar forces first)
    max_tokens: int
    stops: list[str]
    sampler: _internals.LlamaSampler | None  # None: greedy (argmax of the logits)
    started: float
    load_ms: float
    n_past: int = 0
    next_token: int | None = None  # sampled, not yet decoded
    generated: int = 0
    text: str = ""
    emitted: int = 0
    finish: str | None = None
    first_token_ms: float | None = None
    cancelled: bool = False
    batch_size_max: int = 1  # most sequences decoded together with this one (provenance)
    kv_tokens: list[int] = field(default_factory=list)  # tokens whose KV cache is in the slot
    prompt_cached: int = 0  # prompt tokens reused from the slot's cache
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    matcher: LLMatcher | None = None  # the grammar of a structured answer or a tool call
    forced: list[int] = field(default_factory=list)  # tokens the grammar forced after next_token, decoded with it
    forced_total: int = 0  # tokens the grammar forced (decoded without sampling)
    n_prompt: int = 0  # the prompt's own tokens (usage), without the forced ones appended to it

    def sampled(self) -> int:
        """The token sampled last, which the next step decodes (set once the prompt is evaluated)."""
        if self.next_token is None:  # only sequences past their prompt are asked
            raise EngineFailed("llama.cpp: a sequence has no sampled token to decode")
        return self.next_token

    @property
    def hold(self) -> int:
        """Characters held back because they may still become a stop string."""
        return max((len(s) for s in self.stops), default=1) - 1


class LlamaEngine(BatchingEngine):
    kind = "llama.cpp"
    content_types = ("text",)

    def __init__(self, n_threads: int, n_ctx: int, n_parallel: int = 4, kv_cache_type: str = "f16"):
        self.n_threads = n_threads
        self.n_ctx = n_ctx  # per sequence
        self.n_parallel = n_parallel
        self.kv_cache_type = kv_cache_type
        self._model: ResolvedModel | None = None
        self._llm: _internals.LlamaModel | None = None
        self._ctx: _internals.LlamaContext | None = None
        self._batch: _internals.LlamaBatch | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._active: dict[str, Sequence] = {}
        self._slot_tokens: dict[int, list[int]] = {}  # per free slot: the tokens its KV cache holds
        self._waiting: list[GenerationJob] = []
        # slot -> the greedy sampler attached to it (see _sample_in_graph)
        self._in_graph: dict[int, _internals.LlamaSampler] = {}
        self._pieces: dict[int, bytes] = {}  # token -> its text's bytes, for the loaded model
        self._lltokenizer: LLTokenizer | None = None  # llguidance's view of the vocabulary (made on first use)
        self._template: str | None = None
        self.released_bytes = 0  # zeroed context memory given back to the kernel at the last load

    @property
    def busy(self) -> bool:
        return bool(self._active or self._waiting)

    # The loaded model's llama.cpp objects: a job only reaches them after load() made them.
    @property
    def _loaded_llm(self) -> _internals.LlamaModel:
        if self._llm is None:
            raise EngineFailed("llama.cpp has no model loaded")
        return self._llm

    @property
    def _loaded_ctx(self) -> _internals.LlamaContext:
        if self._ctx is None:
            raise EngineFailed("llama.cpp has no context (no model loaded)")
        return self._ctx

    @property
    def _loaded_batch(self) -> _internals.LlamaBatch:
        if self._batch is None:
            raise EngineFailed("llama.cpp has no batch (no model loaded)")
        return self._batch

    # --- loading -----------------------------------------------------------------------------
    def load(self, model: ResolvedModel) -> float:
        """Keep one model warm; loading another replaces it (only when no sequence is running)."""
        if self._is_loaded(model):
            return 0.0
        if self._active:
            running = self._model.name if self._model is not None else "another model"
            raise ModelUnavailable(
                f"cannot switch to {model.name!r} while {running!r} is generating",
                hint="Try again when the running generations finish.",
            )
        if llama_cpp is None:
            raise ModelUnavailable(
                "llama-cpp-python is not installed", hint="Install the text extra: `pip install 'genforge[text]'`."
            )
        start = time.perf_counter()
        self._llm = self._model = self._formatter = self._ctx = self._batch = None
        self._in_graph = {}  # after the context that held them is gone
        self._pieces = {}
        self._slot_tokens = {}
        self._lltokenizer = None
        try:
            # The model alone (tokenizer, metadata, weights): llama_cpp.Llama would add a context of its own that
            # no sequence uses (8 MB). Like Llama(verbose=False), llama.cpp's log then shows only its errors.
            logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
            llama_cpp.llama_backend_init()
            llm = _internals.LlamaModel(
                path_model=model.path, params=llama_cpp.llama_model_default_params(), verbose=False
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelUnavailable(
                f"llama.cpp could not load {model.name!r} from {model.path}: {exc}",
                hint="The file may be corrupt or not a model llama.cpp supports; "
                "check it with `genforge models verify`.",
            ) from exc
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx * self.n_parallel  # split evenly: every slot holds a full context
        params.n_batch = params.n_ubatch = PREFILL_CHUNK
        params.n_seq_max = self.n_parallel
        params.n_threads = params.n_threads_batch = self.n_threads
        params.kv_unified = False
        params.type_k = params.type_v = getattr(llama_cpp, KV_CACHE_TYPES[self.kv_cache_type])
        if self.kv_cache_type != "f16":  # llama.cpp quantizes the V cache only inside flash attention
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        mapped = anonymous_ranges()
        try:
            self._ctx = _internals.LlamaContext(model=llm, params=params, verbose=False)
        except ValueError as exc:
            raise ModelUnavailable(f"llama.cpp could not create a context for {model.name!r}: {exc}") from exc
        # The KV cache llama.cpp just zeroed becomes resident again only as sequences fill it (see pages.py).
        self.released_bytes = release_zero_pages(mapped)
        log.info("%s: %d MB of zeroed context memory given back", model.name, self.released_bytes >> 20)
        self._batch = _internals.LlamaBatch(
            n_tokens=max(PREFILL_CHUNK, self.n_parallel), embd=0, n_seq_max=1, verbose=False
        )
        self._llm, self._model = llm, model
        self._n_vocab = llm.n_vocab()
        self._formatter = self._chat_formatter(llm) if model.chat else None
        self._template = llm.metadata().get("tokenizer.chat_template") if model.chat else None
        return (time.perf_counter() - start) * 1000

    @staticmethod
    def _chat_formatter(llm: _internals.LlamaModel) -> Jinja2ChatFormatter | None:
        """The GGUF's own chat template (tokenizer.chat_template), as llama.cpp's server uses it."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llm.metadata().get("tokenizer.chat_template")
        if not template:
            return None

        def piece(token_id: int) -> str:
            return llm.token_get_text(token_id) if token_id >= 0 else ""

        return Jinja2ChatFormatter(
            template=template,
            eos_token=piece(llm.token_eos()),
            bos_token=piece(llm.token_bos()),
            stop_token_ids=[llm.token_eos()],
        )

    # --- admission ---------------------------------------------------------------------------
    def _prompt_tokens(self, job: GenerationJob) -> list[int]:
        """The prompt as tokens: chat models get their template; base models (or raw requests) the text.

        The template's end-of-turn marker needs no stop string: it is an end-of-generation token,
        recognised by id, and holding text back for it would delay every streamed token.
        """
        llm = self._loaded_llm
        p = params_of(job, TextSettings)
        if self._formatter is None or job.raw:
            if p.tools:
                raise InvalidRequest(
                    "tools need a chat model and its chat template (not a raw prompt)", field="params.tools"
                )
            text = (job.system + "\n\n" if job.system else "") + job.prompt
            return llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        messages = job.messages or [
            *([{"role": "system", "content": job.system}] if job.system else []),
            {"role": "user", "content": job.prompt},
        ]
        tools = None
        if self.tool_template(p) == "model":  # the template renders the tools and earlier calls itself
            tools = [{"type": "function", "function": fn.model_dump(exclude_none=True)} for fn in p.tools]
        elif p.tools or any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
            messages = _generic_tool_chat(messages, p)
        # ChatMessage dumps or the dicts above: the shape of llama_cpp's message TypedDicts
        formatted = self._formatter(
            messages=cast("list[ChatCompletionRequestMessage]", messages),
            tools=cast("list[ChatCompletionTool] | None", tools),
        )
        return llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)

    def tool_template(self, p: TextSettings) -> str | None:
        """How tools reach the prompt: "model" (the GGUF's chat template renders `tools`), "generic" (a system
        message genforge writes, for templates without tool support), None without tools."""
        if not p.tools:
            return None
        return "model" if self._template and "tools" in self._template else "generic"

    def _matcher(self, p: TextSettings) -> LLMatcher | None:
        """The grammar's matcher for a constrained job (None when sampling is free)."""
        grammar = structured.grammar(p)
        if grammar is None:
            return None
        if self._lltokenizer is None:  # ~0.4 s for a 49k vocabulary, once per loaded model
            from llguidance.llamacpp import lltokenizer_from_vocab

            with warnings.catch_warnings():  # llguidance's bridge asks each token's attributes by a deprecated name
                warnings.simplefilter("ignore", DeprecationWarning)
                self._lltokenizer = lltokenizer_from_vocab(self._loaded_llm.vocab, n_vocab=self._n_vocab)
        matcher = LLMatcher(self._lltokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise InvalidRequest(f"the grammar of the answer could not be compiled: {matcher.get_error()}")
        return matcher

    @staticmethod
    def _sampler(p: TextSettings) -> _internals.LlamaSampler | None:
        """llama.cpp's sampler chain for these parameters; None for greedy decoding (temperature 0)."""
        if p.temperature == 0:
            return None
        s = _internals.LlamaSampler()  # the chain llama-cpp-python uses for the same parameters
        s.add_top_k(40)
        s.add_top_p(p.top_p, 1)
        s.add_min_p(0.05, 1)
        s.add_temp(p.temperature)
        s.add_dist(p.seed)
        return s

    def _sample_in_graph(self, slot: int, greedy: bool) -> None:
        """A greedy sequence's token is picked inside the decode (llama.cpp's greedy sampler attached to its slot,
        `llama_set_sampler`): the engine threads take the argmax, and Python reads one token instead of 49k logits
        the other core just wrote (~90 us a token on 2 cores). Other sequences' slots have none attached."""
        if greedy == (slot in self._in_graph):
            return
        if not greedy:
            if not llama_cpp.llama_set_sampler(self._loaded_ctx.ctx, slot, None):  # its sampler needs the logits
                raise EngineFailed(f"llama.cpp could not detach the greedy sampler of slot {slot}")
            self._in_graph.pop(slot).close()
            return
        sampler = _internals.LlamaSampler()  # a new one each time: llama.cpp sets a chain up for the graph once
        sampler.add_greedy()
        if llama_cpp.llama_set_sampler(self._loaded_ctx.ctx, slot, sampler.sampler):
            self._in_graph[slot] = sampler
        # (a greedy slot that could not attach one takes the argmax in Python below: the same token)

    def _sample(self, seq: Sequence, row: int) -> int:
        """The next token from a batch row. Greedy is the argmax, the first highest logit: picked in the graph
        (see _sample_in_graph) or else read in place; the sampler chain would first copy all 49k logits into a
        candidate array, 90 us per token, more than 1 % of a 4-sequence step. A constrained sequence's row has
        the tokens its grammar forbids set to -inf first (in llama.cpp's logits, which its sampler then reads)."""
        ctx = self._loaded_ctx
        if seq.matcher is not None:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx.ctx, row), shape=(self._n_vocab,))
            mask = np.zeros((self._n_vocab + 31) // 32, dtype=np.int32)
            seq.matcher.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
            if seq.matcher.is_error():
                raise EngineFailed(f"the grammar failed: {seq.matcher.get_error()}")
            allowed = np.unpackbits(mask.view(np.uint8), bitorder="little")[: self._n_vocab].astype(bool)
            logits[~allowed] = -np.inf
            if seq.sampler is None:
                return int(logits.argmax())
            return seq.sampler.sample(ctx, row)
        if seq.sampler is None:
            if seq.slot in self._in_graph:
                token = llama_cpp.llama_get_sampled_token_ith(ctx.ctx, row)
                if token == llama_cpp.LLAMA_TOKEN_NULL:
                    raise EngineFailed("llama.cpp's greedy sampler gave no token")
                return token
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx.ctx, row), shape=(self._n_vocab,))
            return int(logits.argmax())
        return seq.sampler.sample(ctx, row)

    def submit(self, job: GenerationJob) -> list[EngineEvent]:
        """Queue a job; it starts at the next step with a free slot."""
        self._waiting.append(job)
        return []

    def _is_loaded(self, model: ResolvedModel) -> bool:
        return self._model is not None and self._model.path == model.path and self._model.sha256 == model.sha256

    def cancel(self, job_id: str) -> list[EngineEvent]:
        if job_id in self._active:
            self._active[job_id].cancelled = True
            return []
        for i, job in enumerate(self._waiting):
            if job.content_id == job_id:
                del self._waiting[i]
                return [Failed(job_id, Cancelled("cancelled before it started"))]
        return []

    def _admit(self, job: GenerationJob, load_ms: float) -> list[EngineEvent]:
        start = time.perf_counter()
        prompt = self._prompt_tokens(job)
        if len(prompt) >= self.n_ctx:
            return [
                Failed(
                    job.content_id,
                    InvalidRequest(
                        f"the prompt is {len(prompt)} tokens; the model's context holds {self.n_ctx}",
                        field="prompt",
                        hint="Shorten the prompt or raise GENFORGE_CONTEXT_SIZE.",
                    ),
                )
            ]
        p = params_of(job, TextSettings)
        slot, reuse = self._pick_slot(prompt)
        llama_cpp.llama_memory_seq_rm(self._loaded_ctx.memory, slot, reuse, -1)
        sampler = self._sampler(p)
        matcher = self._matcher(p)
        self._sample_in_graph(slot, greedy=sampler is None and matcher is None)  # a grammar needs the logits
        seq = Sequence(
            job=job,
            slot=slot,
            prompt=prompt,
            max_tokens=min(p.max_tokens, self.n_ctx - len(prompt)),
            stops=[s for s in p.stop if s],
            sampler=sampler,
            started=start,
            load_ms=load_ms,
            kv_tokens=prompt[:reuse],
            n_past=reuse,
            prompt_cached=reuse,
            matcher=matcher,
            n_prompt=len(prompt),
        )
        self._active[job.content_id] = seq
        if matcher is not None and not seq.stops:
            return self._force_first(seq, matcher)
        return []

    def _force_first(self, seq: Sequence, matcher: LLMatcher) -> list[EngineEvent]:
        """What the grammar forces before anything is sampled (`{"` and the first key; `<tool_call>` and the name
        of the only function) is evaluated with the prompt, in its chunk, instead of one step each. At least one
        token is left to sample."""
        forced = matcher.compute_ff_tokens()[: min(FORCED_MAX, seq.max_tokens - 1, self.n_ctx - len(seq.prompt) - 1)]
        if not forced:
            return []
        if not matcher.consume_tokens(forced):
            raise EngineFailed(f"the grammar refused the tokens it forced: {matcher.get_error()}")
        events: list[EngineEvent] = []
        for f in forced:
            events += self._append(seq, f)
        seq.prompt = [*seq.prompt, *forced]
        seq.forced_total += len(forced)
        return events

    def _pick_slot(self, prompt: list[int]) -> tuple[int, int]:
        """A free slot, preferring the one whose cached tokens share the longest prefix with `prompt`
        (as llama.cpp's server does): that prefix's KV cache is reused instead of evaluated again.
        At least the last prompt token is always evaluated, for fresh logits."""
        busy = {s.slot for s in self._active.values()}
        best, best_len = None, -1
        for slot in range(self.n_parallel):
            if slot in busy:
                continue
            cached = self._slot_tokens.get(slot, [])
            common = 0
            for a, b in zip(cached, prompt, strict=False):
                if a != b:
                    break
                common += 1
            if common > best_len:
                best, best_len = slot, common
        if best is None:  # step() admits a job only while fewer than n_parallel sequences run
            raise EngineFailed("llama.cpp: no free slot for the sequence")
        return best, min(best_len, len(prompt) - 1)

    def _forget(self, slot: int) -> None:
        llama_cpp.llama_memory_seq_rm(self._loaded_ctx.memory, slot, -1, -1)
        self._slot_tokens.pop(slot, None)

    # --- generation ----------------------------------------------------------------------------
    def _decode(self) -> None:
        if llama_cpp.llama_decode(self._loaded_ctx.ctx, self._loaded_batch.batch) != 0:
            raise EngineFailed("llama_decode failed (context full or internal error)")

    def step(self) -> list[EngineEvent]:
        """Admit waiting jobs into free slots, then decode one token for every active sequence."""
        events: list[EngineEvent] = []
        try:
            for job_id in [j for j, s in self._active.items() if s.cancelled]:
                self._forget(self._active.pop(job_id).slot)
                events.append(Failed(job_id, Cancelled("cancelled between tokens")))
            while self._waiting and len(self._active) < self.n_parallel:
                job = self._waiting[0]
                if self._active and not self._is_loaded(job.model):
                    break  # another model: switch once the running sequences finish
                self._waiting.pop(0)
                try:
                    events += self._admit(job, self.load(job.model))  # load: 0 ms when it is loaded
                except Exception as exc:  # this job fails alone (loading, its prompt); the others go on
                    events.append(Failed(job.content_id, _typed(exc, "could not start the generation")))
            events += self._decode_step()
        except Exception as exc:  # the whole batch shares the failure: fail every sequence in it
            err = _typed(exc, "failed during generation")
            events += [Failed(job_id, err) for job_id in self._active]
            for seq in self._active.values():
                self._forget(seq.slot)
            self._active.clear()
        return events

    def _decode_step(self) -> list[EngineEvent]:
        """One llama_decode for everything (continuous batching, as llama.cpp's server does): the next token
        of every generating sequence, then as much of the waiting prompts as the batch holds. Sequences whose
        prompt is complete sample their first token from its last position."""
        b = self._loaded_batch.batch
        rows: list[tuple[Sequence, int]] = []  # (sequence, batch row whose logits it samples)
        n = 0

        def add(seq: Sequence, token: int, pos: int, logits: bool) -> None:
            nonlocal n
            b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = token, pos, 1, logits
            b.seq_id[n][0] = seq.slot
            if logits:
                rows.append((seq, n))
            n += 1

        generating = [s for s in self._active.values() if s.n_past >= len(s.prompt)]
        for seq in generating:  # its sampled token, then the tokens its grammar forced after it (one decode)
            tokens = [seq.sampled(), *seq.forced]
            for i, token in enumerate(tokens):
                add(seq, token, seq.n_past + i, i == len(tokens) - 1)
        fed: list[tuple[Sequence, list[int]]] = []
        for seq in [s for s in self._active.values() if s.n_past < len(s.prompt)]:
            if n >= PREFILL_CHUNK:
                break
            chunk = seq.prompt[seq.n_past : seq.n_past + PREFILL_CHUNK - n]
            for i, token in enumerate(chunk):
                add(seq, token, seq.n_past + i, seq.n_past + i == len(seq.prompt) - 1)
            fed.append((seq, chunk))
        if n == 0:
            return []
        b.n_tokens = n
        self._decode()
        for seq in generating:
            seq.kv_tokens += [seq.sampled(), *seq.forced]
            seq.n_past += 1 + len(seq.forced)
            seq.forced = []
            seq.batch_size_max = max(seq.batch_size_max, len(generating))
        for seq, chunk in fed:
            seq.kv_tokens.extend(chunk)
            seq.n_past += len(chunk)
        events: list[EngineEvent] = []
        for seq, row in rows:
            events += self._accept(seq, self._sample(seq, row))
        return events

    def _accept(self, seq: Sequence, token: int) -> list[EngineEvent]:
        """Take one sampled token: stop, or add its text and emit what is safe to show. A constrained sequence's
        grammar takes it too, and then says which tokens it forces next: those are added now and decoded
        together with this one at the next step (fast-forward), instead of one step each."""
        events: list[EngineEvent] = []
        if llama_cpp.llama_vocab_is_eog(self._loaded_llm.vocab, token):
            seq.finish = "stop"
        else:
            events += self._append(seq, token)
            if not seq.finish:
                seq.next_token = token
            if seq.matcher is not None and not seq.finish:
                events += self._fast_forward(seq, seq.matcher, token)
        if seq.finish:
            events += self._finish(seq)
        return events

    def _fast_forward(self, seq: Sequence, matcher: LLMatcher, token: int) -> list[EngineEvent]:
        if not matcher.consume_token(token):
            raise EngineFailed(f"the grammar refused a token it allowed: {matcher.get_error()}")
        events: list[EngineEvent] = []
        forced = matcher.compute_ff_tokens()[: min(FORCED_MAX, seq.max_tokens - seq.generated)]
        if forced and not matcher.consume_tokens(forced):
            raise EngineFailed(f"the grammar refused the tokens it forced: {matcher.get_error()}")
        for f in forced:
            events += self._append(seq, f)
            seq.forced.append(f)
            seq.forced_total += 1
            if seq.finish:
                return events
        if matcher.is_stopped():  # complete: nothing but the end may follow
            seq.finish = "stop"
        return events

    def _append(self, seq: Sequence, token: int) -> list[EngineEvent]:
        """Add a generated token's text; emit what can no longer become a stop string; finish at a stop string
        or at max_tokens."""
        seq.generated += 1
        if seq.first_token_ms is None:
            seq.first_token_ms = (time.perf_counter() - seq.started) * 1000
        piece = self._pieces.get(token)
        if piece is None:  # each token's bytes are asked of llama.cpp once per model
            piece = self._pieces[token] = self._loaded_llm.detokenize([token], special=False)
        seq.text += seq.decoder.decode(piece)
        cut = min((i for i in (seq.text.find(s) for s in seq.stops) if i >= 0), default=-1)
        if cut >= 0:
            seq.text, seq.finish = seq.text[:cut], "stop"
            return []
        events: list[EngineEvent] = []
        safe = len(seq.text) - seq.hold
        if safe > seq.emitted:
            events.append(Update(seq.job.content_id, {"type": "token", "text": seq.text[seq.emitted : safe]}))
            seq.emitted = safe
        if seq.generated >= seq.max_tokens:
            seq.finish = "length"
        return events

    def _finish(self, seq: Sequence) -> list[EngineEvent]:
        del self._active[seq.job.content_id]
        self._slot_tokens[seq.slot] = seq.kv_tokens  # kept for the next prompt with the same prefix
        seq.text += seq.decoder.decode(b"", final=True)
        events: list[EngineEvent] = []
        if len(seq.text) > seq.emitted:
            events.append(Update(seq.job.content_id, {"type": "token", "text": seq.text[seq.emitted :]}))
        warnings: list[str] = []
        requested = params_of(seq.job, TextSettings).max_tokens
        if seq.max_tokens < requested:
            warnings.append(
                f"max_tokens {requested} did not fit the context beside the {seq.n_prompt}-token "
                f"prompt; generation was limited to {seq.max_tokens} tokens"
            )
        out = EngineOutput(
            data=seq.text.encode("utf-8"),
            media_type="text/plain",
            engine_version=llama_cpp.__version__,
            load_ms=seq.load_ms,
            generate_ms=(time.perf_counter() - seq.started) * 1000,
            text=seq.text,
            finish_reason=seq.finish,
            usage={"prompt_tokens": seq.n_prompt, "completion_tokens": seq.generated},
            facts=TextFacts(
                ttft_ms=round(seq.first_token_ms, 2) if seq.first_token_ms is not None else None,
                batch_size_max=seq.batch_size_max,
                prompt_tokens_cached=seq.prompt_cached,
                kv_cache_type=self.kv_cache_type,
                warnings=warnings,
                forced_tokens=seq.forced_total if seq.matcher is not None else None,
                tool_template=self.tool_template(params_of(seq.job, TextSettings)),
            ),
        )
        return [*events, Done(seq.job.content_id, out)]


def _generic_tool_chat(messages: list[dict[str, Any]], p: TextSettings) -> list[dict[str, Any]]:
    """The chat for a template without tool support: the tools described in the system message, earlier calls
    written as the model writes them, tool results as `tool` turns."""
    out: list[dict[str, Any]] = []
    for m in messages:
        content = m.get("content") or ""
        if m.get("tool_calls"):
            calls = "\n".join(
                structured.call_text(c["function"]["name"], c["function"]["arguments"]) for c in m["tool_calls"]
            )
            content = f"{content}\n{calls}" if content else calls
        out.append({"role": m["role"], "content": content})
    if p.tools:
        described = structured.tools_prompt(list(p.tools))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{described}"}
        else:
            out.insert(0, {"role": "system", "content": described})
    return out


def _typed(exc: Exception, what: str) -> GenforgeError:
    return exc if isinstance(exc, GenforgeError) else EngineFailed(f"llama.cpp {what}: {type(exc).__name__}: {exc}")


def create(settings: Settings) -> LlamaEngine:
    return LlamaEngine(
        n_threads=settings.n_threads,
        n_ctx=settings.context_size,
        n_parallel=settings.parallel,
        kv_cache_type=settings.kv_cache_type,
    )
