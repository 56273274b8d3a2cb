"""The server: one checkpoint behind a web page and an OpenAI-compatible API (FastAPI on uvicorn).

Routes:
    GET  /                    the page (one self-contained file: no CDN, works offline)
    GET  /health              liveness, the model's name, requests waiting
    GET  /v1/models           the one model, as OpenAI lists models
    POST /v1/completions      OpenAI text completions (see completions.py), streamed as server-sent events on request
    POST /v1/chat/completions OpenAI chat completions, for instruction-tuned checkpoints (see chat.py)
    GET  /api/model           the model card the page shows
    POST /api/score           every token of a text: log-probability, rank, top candidates
    POST /api/continue        a sampled continuation as server-sent events, each token with the distribution it came from
    GET  /tokenizer_info, POST /tokenize, POST /detokenize   vLLM's tokenizer endpoints (see tokenize.py)

With an API key (`serve(api_key=...)`, `nextlab serve --api-key` or NEXTLAB_API_KEY), every route but /health and
the page's shell needs `Authorization: Bearer KEY` (`ApiKey`); the page asks for the key once per tab.

The model runs on one thread, never two at once (PyTorch already uses every
core for one forward pass). Up to `Limits.max_batch` requests run at once and
their generations are stepped together, one token each per forward
(continuous batching, batching.py); more wait in arrival order, up to
`Limits.max_queue`. With max_batch 1, requests run one at a time. A stream whose
client disconnects is skipped if still waiting, and stops at the next token
otherwise; an error after a stream has begun is sent as an error event. The
server loads the checkpoint it was started with and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from nextlab.checkpoint import Checkpoint, model_card
from nextlab.errors import NextlabError
from nextlab.model import GPT
from nextlab.sample import score_in_detail
from nextlab.serve.batching import BatchingEngine, Unbatched
from nextlab.serve.chat import ChatRequest, chat_chunk_json, chat_json, plan_chat
from nextlab.serve.completions import (
    APIError,
    CompletionRequest,
    Limits,
    Plan,
    chunk_json,
    completion_json,
    plan_completion,
    run_plan,
    usage_json,
)
from nextlab.serve.tokenize import DetokenizeRequest, TokenizeRequest, detokenize, tokenize, tokenizer_info
from nextlab.tokenizer import token_pieces

log = logging.getLogger("nextlab.serve")
PAGE_FILE = Path(__file__).with_name("page.html")
_DONE = object()


class ModelWorker:
    """Runs requests' work in arrival order, with a cap on how many requests may wait.

    Unbatched (max_batch 1), one thread runs one request at a time and is the model thread. Batched, up to
    max_batch requests run at once on their own threads and reach the model through `engine`, whose one
    model thread steps their generations together (continuous batching, see batching.py). Either way a
    request's work reaches the model only through `engine` (`engine.call`, `engine.generate`)."""

    def __init__(self, max_queue: int, model: GPT | None = None, max_batch: int = 1) -> None:
        self.engine = BatchingEngine(model, max_batch) if max_batch > 1 else Unbatched(model)
        self.executor = ThreadPoolExecutor(max_workers=max_batch, thread_name_prefix="nextlab-request")
        self.max_queue = max_queue
        self.waiting = 0
        self._lock = threading.Lock()

    def _admit(self) -> None:
        with self._lock:
            if self.waiting >= self.max_queue:
                raise APIError(429, f"the server is busy: {self.waiting} requests are waiting for the model "
                                    f"(limit {self.max_queue}); try again shortly", type="server_busy", code="queue_full")
            self.waiting += 1

    def _started(self) -> None:
        with self._lock:
            self.waiting -= 1

    async def run(self, fn: Callable[[], object]):
        """fn() on a request thread; its result."""
        self._admit()

        def job():
            self._started()
            return fn()

        future = self.executor.submit(job)
        # a request cancelled before its turn never runs: it must still leave the queue
        future.add_done_callback(lambda f: f.cancelled() and self._started())
        return await asyncio.wrap_future(future)

    def stream(self, make: Callable[[Callable[[], bool]], Iterator]) -> AsyncIterator:
        """Items of the generator make(cancelled) as they come, produced on a request thread (admission is checked now)."""
        self._admit()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop has closed (server shutting down)
                cancel.set()

        def job() -> None:
            self._started()
            try:
                if not cancel.is_set():
                    with contextlib.closing(make(cancel.is_set)) as produced:  # stopping early ends its generation
                        for item in produced:
                            put(item)
                            if cancel.is_set():
                                break
            except Exception as e:  # handed to the request that asked
                put(e)
            finally:
                put(_DONE)

        self.executor.submit(job)

        async def items():
            try:
                while (item := await queue.get()) is not _DONE:
                    if isinstance(item, Exception):
                        raise item
                    yield item
            finally:
                cancel.set()

        return items()


def _error(e: APIError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    err = exc.errors()[0]
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    param = loc[0] if loc else None
    if err.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}", None
    if err.get("type") == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if err.get("type") == "missing":
        return f"missing required parameter: {'.'.join(loc)}", param
    if param == "prompt":
        return "prompt must be a string, a list of strings, a list of token ids, or a list of lists of token ids", param
    return f"{'.'.join(loc) or 'body'}: {err.get('msg')}", param


async def send_error(send, e: APIError, headers: list[tuple[bytes, bytes]] = ()) -> None:
    """An error response sent at the ASGI level, before the app (and the request body) is reached."""
    body = json.dumps(e.body()).encode()
    await send({"type": "http.response.start", "status": e.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuses request bodies over max_bytes with 413 before the app sees them (declared or not)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def _reject(self, send) -> None:
        await send_error(send, APIError(413, f"the request body is larger than this server's limit of {self.max_bytes:,} bytes",
                                        code="body_too_large"))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._reject(send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # later reads wait for the client to go away (disconnect detection)

        await self.app(scope, replay, send)


OPEN_PATHS = ("/health", "/")  # liveness, and the page's shell, which holds no model data and asks for the key


class ApiKey:
    """With a key set, every route but OPEN_PATHS needs `Authorization: Bearer KEY`: 401 in OpenAI's error shape
    otherwise, before the body is read. The key is compared in constant time."""

    def __init__(self, app, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            return await self.app(scope, receive, send)
        message = ("Incorrect API key provided" if given else
                   "You didn't provide an API key: send it as 'Authorization: Bearer KEY'")
        await send_error(send, APIError(401, message, code="invalid_api_key"), [(b"www-authenticate", b"Bearer")])


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """OpenAI's error shape, which every refusal of this server takes (APIError.body)."""

    error: ErrorDetail


# every status a route may refuse with, declared in the OpenAPI schema (clients and fuzzers read it)
ERROR_RESPONSES = {status: {"model": ErrorBody, "description": what} for status, what in (
    (400, "a bad request: the message names the parameter at fault"), (401, "a missing or wrong API key"),
    (404, "no such model or route"), (405, "a method the route does not take"), (413, "the body is over the limit"),
    (429, "too many requests waiting for the model"))}


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as declared: false is not 0
    text: str
    top: int = 10


class ContinueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as declared: false is not 0
    text: str = ""
    max_tokens: int = 64
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    seed: int | None = None
    top: int = 10


def _sse(obj) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def create_app(ckpt: Checkpoint, name: str, limits: Limits | None = None) -> FastAPI:
    """The FastAPI application serving `ckpt` under the model name `name`."""
    limits = limits or Limits()
    model, tokenizer = ckpt.model.eval(), ckpt.tokenizer
    block = model.cfg.block_size
    worker = ModelWorker(limits.max_queue, model, limits.max_batch)
    engine = worker.engine
    created = int(ckpt.path.stat().st_mtime)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        worker.engine.close()  # the model thread ends with the server

    app = FastAPI(title="nextlab", summary=f"next-token prediction with {name}", docs_url="/docs", redoc_url=None,
                  responses=ERROR_RESPONSES, lifespan=lifespan)
    app.state.worker = worker

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return _error(e)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return _error(APIError(400, message, param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return _error(APIError(exc.status_code, message, type=kind), exc.headers)  # e.g. a 405's Allow

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(APIError(500, f"internal server error: {type(exc).__name__}", type="server_error"))

    def check_model(requested: str) -> None:
        if requested != name:
            raise APIError(404, f"The model '{requested}' does not exist; this server serves '{name}'",
                           "model", "model_not_found", type="not_found_error")

    def model_json() -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "nextlab"}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "waiting": worker.waiting}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_json()]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str):
        check_model(model_id)
        return model_json()

    async def respond(plan: Plan, stream: bool, whole: Callable, chunk: Callable, chunk_object: str):
        """Run a planned completion: one JSON response, or server-sent events as the tokens come."""
        if not stream:
            pieces = await worker.run(lambda: list(run_plan(engine, tokenizer, plan, seconds=limits.max_request_seconds,
                                                            live=False)))
            return whole(plan, pieces, name)
        items = worker.stream(lambda cancelled: run_plan(engine, tokenizer, plan, cancelled, limits.max_request_seconds))

        async def events():
            started, n_tokens = set(), 0
            try:
                async for piece in items:
                    n_tokens += piece.n_tokens
                    yield _sse(chunk(plan, piece, name, first=piece.index not in started))
                    started.add(piece.index)
            except Exception as e:  # the response has begun: the error goes into the stream
                log.exception("error while streaming %s", plan.id)
                yield _sse(APIError(500, f"internal server error while streaming: {type(e).__name__}", type="server_error").body())
                yield b"data: [DONE]\n\n"
                return
            if plan.include_usage:
                yield _sse({"id": plan.id, "object": chunk_object, "created": plan.created, "model": name, "choices": [],
                            "usage": usage_json(plan, n_tokens)})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        check_model(req.model)
        plan = plan_completion(req, tokenizer, block, limits)
        return await respond(plan, bool(req.stream), completion_json, chunk_json, "text_completion")

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest):
        check_model(req.model)
        plan = plan_chat(req, tokenizer, block, limits, name)
        return await respond(plan, bool(req.stream), chat_json, chat_chunk_json, "chat.completion.chunk")

    @app.get("/tokenizer_info")
    async def get_tokenizer_info():
        return tokenizer_info(tokenizer, block)

    @app.post("/tokenize")
    async def tokenize_text(req: TokenizeRequest):
        if req.model is not None:
            check_model(req.model)
        return tokenize(tokenizer, req, block)

    @app.post("/detokenize")
    async def detokenize_ids(req: DetokenizeRequest):
        if req.model is not None:
            check_model(req.model)
        return detokenize(tokenizer, req)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE_FILE.read_text())

    @app.get("/api/model")
    async def card():
        return {"name": name, "card": model_card(ckpt.config), "block_size": block, "vocab_size": tokenizer.vocab_size,
                "limits": asdict(limits)}

    @app.post("/api/score")
    async def score_text(req: ScoreRequest):
        if not 0 <= req.top <= limits.max_logprobs:
            raise APIError(400, f"top must be between 0 and {limits.max_logprobs}, got {req.top}", "top")
        ids = tokenizer.encode(req.text)
        if len(ids) > limits.max_score_tokens:
            raise APIError(400, f"the text is {len(ids)} tokens; this server scores at most {limits.max_score_tokens}", "text")
        details = await worker.run(lambda: engine.call(lambda: score_in_detail(model, tokenizer, ids, top_n=req.top)))
        tokens = [{"id": d.id, "token": d.text, "text": piece, "logprob": d.logprob, "bits": d.surprisal_bits, "rank": d.rank,
                   "top": [{"token": c.text, "prob": c.prob} for c in d.top]}
                  for d, piece in zip(details, token_pieces(tokenizer, ids))]
        total = sum(t["bits"] for t in tokens)
        return {"tokens": tokens, "total_bits": total, "bytes": len(req.text.encode())}

    @app.post("/api/continue")
    async def continue_text(req: ContinueRequest):
        try:
            plan = plan_completion(CompletionRequest(model=name, prompt=req.text, max_tokens=req.max_tokens, temperature=req.temperature,
                                                     top_k=req.top_k, top_p=req.top_p, seed=req.seed, logprobs=req.top),
                                   tokenizer, block, limits)
        except APIError as e:  # the page's names for the same parameters
            e.param = {"prompt": "text", "logprobs": "top"}.get(e.param, e.param)
            e.message = e.message.replace("logprobs must", "top must").replace("prompt is", "text is")
            raise
        if plan.max_tokens == 0:
            raise APIError(400, "max_tokens must be at least 1", "max_tokens")

        def make(cancelled):
            stream = engine.generate(tokenizer, [tokenizer.eot_id] + plan.prompts[0], max_new_tokens=plan.max_tokens,
                                     temperature=plan.temperature, top_k=plan.top_k, top_p=plan.top_p, seed=plan.seed,
                                     top_n=req.top)
            with contextlib.closing(stream):
                for g in stream:
                    if cancelled():
                        return
                    yield g

        items = worker.stream(make)

        async def events():
            async for g in items:
                yield _sse({"id": g.id, "token": tokenizer.token_str(g.id) if g.id >= 0 else None, "text": g.text,
                            "logprob": g.logprob if g.id >= 0 else None, "rank": g.rank, "finish_reason": g.finish_reason,
                            "top": [{"token": c.text, "prob": c.prob} for c in g.top],
                            "sampled_from": [{"token": c.text, "prob": c.prob} for c in g.sampled_from]})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def serve(checkpoint: str | Path, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
          limits: Limits | None = None, threads: int | None = None, log_level: str = "info", api_key: str | None = None,
          insecure: bool = False) -> None:
    """Load `checkpoint` and serve it until interrupted; with `api_key`, every route but OPEN_PATHS needs it.

    Listening beyond loopback without a key is refused unless `insecure`: anyone who can reach the port could use it."""
    import torch
    import uvicorn

    from nextlab.checkpoint import load_checkpoint

    if api_key is not None and not api_key.strip():
        raise NextlabError("the API key is empty; give a non-empty --api-key or NEXTLAB_API_KEY")
    if not api_key and not insecure and not is_loopback(host):
        raise NextlabError(f"--host {host} is reachable from other machines and no API key is set, so anyone who reaches "
                           "the port could use the model; set --api-key (or NEXTLAB_API_KEY), or pass --insecure to serve openly")

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            raise NextlabError(f"cannot listen on {host}:{port}: {e.strerror}; pick another --port or --host") from None
    if threads:
        torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    name = name or model_name(checkpoint)
    limits = limits or Limits()
    app = BodyLimit(create_app(ckpt, name, limits), limits.max_body_bytes)
    if api_key:
        app = ApiKey(app, api_key)  # outermost: an unauthenticated body is never read
    print(f"serving {name} ({ckpt.path}) on http://{host}:{port}/  (API: http://{host}:{port}/v1)"
          + ("; every route but /health and the page needs the API key" if api_key else ""), flush=True)
    server = _server_class()(uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
    server.run()
    print("stopped", flush=True)


SHUTDOWN_GRACE_S = 5  # on SIGTERM/SIGINT, how long requests in flight may take to finish before they are cancelled


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, whose shutdown on SIGTERM or SIGINT ends in a clean exit (status 0): it stops accepting,
        lets requests in flight finish for SHUTDOWN_GRACE_S, cancels the rest (a cancelled stream stops its
        generation at the next token), and returns, where uvicorn would re-raise the signal."""

        @contextlib.contextmanager
        def capture_signals(self):
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def model_name(checkpoint: str | Path) -> str:
    """The name clients use for a checkpoint: its run directory's name (`runs/demo` -> `demo`)."""
    path = Path(checkpoint).resolve()
    if path.name.startswith("step_") and path.parent.name == "checkpoints":
        path = path.parent.parent
    return path.name
