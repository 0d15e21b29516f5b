"""llama.cpp through llama-cpp-python. Runs inside the engine worker process (worker.py)."""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable

from genforge.catalog import ResolvedModel
from genforge.engines.base import Emit, EngineOutput, GenerationJob
from genforge.errors import Cancelled, EngineFailed, InvalidRequest, ModelUnavailable

try:  # the text extra; its absence is reported when a model is loaded
    import llama_cpp
except ImportError:  # pragma: no cover - depends on the installation
    llama_cpp = None


class LlamaEngine:
    kind = "llama.cpp"
    content_types = ("text",)

    def __init__(self, n_threads: int, n_ctx: int):
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self._model: ResolvedModel | None = None
        self._llm = None
        self._formatter = None

    def load(self, model: ResolvedModel) -> float:
        """Keep one model warm; loading another replaces it."""
        if self._model is not None and self._model.path == model.path and self._model.sha256 == model.sha256:
            return 0.0
        if llama_cpp is None:
            raise ModelUnavailable("llama-cpp-python is not installed",
                                   hint="Install the text extra: `pip install 'genforge[text]'`.")
        start = time.perf_counter()
        self._llm = self._model = self._formatter = None
        try:
            llm = llama_cpp.Llama(model_path=model.path, n_ctx=self.n_ctx, n_threads=self.n_threads,
                        n_threads_batch=self.n_threads, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelUnavailable(f"llama.cpp could not load {model.name!r} from {model.path}: {exc}",
                                   hint="The file may be corrupt or not a model llama.cpp supports; "
                                        "check it with `genforge models verify`.") from exc
        self._llm, self._model = llm, model
        self._formatter = self._chat_formatter(llm) if model.chat else None
        return (time.perf_counter() - start) * 1000

    @staticmethod
    def _chat_formatter(llm):
        """The GGUF's own chat template (tokenizer.chat_template), as llama.cpp's server uses it."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        vocab = llm._model

        def piece(token_id: int) -> str:
            return vocab.token_get_text(token_id) if token_id >= 0 else ""

        return Jinja2ChatFormatter(template=template, eos_token=piece(llm.token_eos()),
                                   bos_token=piece(llm.token_bos()), stop_token_ids=[llm.token_eos()])

    def _prompt_tokens(self, job: GenerationJob) -> tuple[list[int], list[str]]:
        llm = self._llm
        if self._formatter is None:  # base model: the prompt is the text to continue
            text = (job.system + "\n\n" if job.system else "") + job.prompt
            return llm.tokenize(text.encode("utf-8"), add_bos=True, special=False), []
        messages = ([{"role": "system", "content": job.system}] if job.system else [])
        messages.append({"role": "user", "content": job.prompt})
        formatted = self._formatter(messages=messages)
        stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop] if formatted.stop else []
        tokens = llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)
        return tokens, stops

    def generate(self, job: GenerationJob, emit: Emit, cancelled: Callable[[], bool]) -> EngineOutput:
        load_ms = self.load(job.model)
        llm = self._llm
        p = job.params
        start = time.perf_counter()
        prompt, template_stops = self._prompt_tokens(job)
        if len(prompt) >= self.n_ctx:
            raise InvalidRequest(f"the prompt is {len(prompt)} tokens; the model's context holds {self.n_ctx}",
                                 field="prompt", hint="Shorten the prompt or raise GENFORGE_CONTEXT_SIZE.")
        max_tokens = min(p["max_tokens"], self.n_ctx - len(prompt))
        stops = [s for s in [*template_stops, *(p.get("stop") or [])] if s]
        llm.set_seed(p["seed"])
        vocab = llm._model.vocab

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, emitted, generated, finish = "", 0, 0, "length"
        first_token_ms = None
        hold = max((len(s) for s in stops), default=1) - 1  # text that may still become a stop string
        try:
            for token in llm.generate(prompt, temp=p["temperature"], top_p=p["top_p"], top_k=40,
                                      repeat_penalty=1.0, reset=True):
                if cancelled():
                    raise Cancelled("cancelled between tokens")
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = "stop"
                    break
                generated += 1
                if first_token_ms is None:
                    first_token_ms = (time.perf_counter() - start) * 1000
                text += decoder.decode(llm.detokenize([token], special=False))
                cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
                    break
                safe = len(text) - hold
                if safe > emitted:
                    emit({"type": "token", "text": text[emitted:safe]})
                    emitted = safe
                if generated >= max_tokens:
                    break
        except (Cancelled, InvalidRequest):
            raise
        except Exception as exc:
            raise EngineFailed(f"llama.cpp failed during generation: {type(exc).__name__}: {exc}") from exc
        text += decoder.decode(b"", final=True)
        if len(text) > emitted:
            emit({"type": "token", "text": text[emitted:]})
        generate_ms = (time.perf_counter() - start) * 1000
        return EngineOutput(
            data=text.encode("utf-8"), media_type="text/plain", engine_version=llama_cpp.__version__,
            load_ms=load_ms, generate_ms=generate_ms, text=text, finish_reason=finish,
            usage={"prompt_tokens": len(prompt), "completion_tokens": generated},
            extra={"ttft_ms": round(first_token_ms, 2) if first_token_ms is not None else None,
                   "max_tokens_effective": max_tokens},
        )
