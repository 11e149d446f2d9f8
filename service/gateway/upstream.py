"""Forwarding to OpenAI-compatible upstreams: one pooled httpx client, fallbacks before the first byte, usage.

The upstream key is read from the environment variable the model names, per request, and only ever placed in the
outgoing Authorization header: it is never stored, returned, or written to a log line.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from service.routing.state import UpstreamTarget
from service.settings import Settings, is_own_setting

# Upstream statuses that say nothing about the request itself (rate limits, outages, a bad upstream key or model
# name): the next alternative may answer. Any other 4xx is the request's fault and goes back to the caller as is.
RETRYABLE_4XX = frozenset({401, 403, 404, 408, 409, 425, 429})
DONE = b"data: [DONE]\n\n"


def retryable(status_code: int) -> bool:
    return status_code >= 500 or status_code in RETRYABLE_4XX


@dataclass(frozen=True)
class Failure:
    """One upstream that did not answer, and why (never the key, never the upstream's body)."""

    model: str
    reason: str


class EmptyStream(Exception):
    """The upstream said 200 and closed the stream without a byte."""


class AllUpstreamsFailed(RuntimeError):
    def __init__(self, failures: Sequence[Failure]) -> None:
        self.failures = list(failures)
        super().__init__("; ".join(f"{f.model}: {f.reason}" for f in failures) or "no upstream to try")


@dataclass
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def cost_usd(self, target: UpstreamTarget) -> float | None:
        """The upstream's reported tokens times the model's registered prices (USD per million tokens)."""
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        if target.input_usd_per_mtok is None or target.output_usd_per_mtok is None:
            return None
        return (
            self.prompt_tokens * target.input_usd_per_mtok + self.completion_tokens * target.output_usd_per_mtok
        ) / 1e6

    def read(self, payload: Any) -> bool:
        """Takes `usage` from a completion (or a stream chunk); True when it held one."""
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if not isinstance(usage, dict):
            return False
        self.prompt_tokens = _token_count(usage.get("prompt_tokens"))
        self.completion_tokens = _token_count(usage.get("completion_tokens"))
        return True


MAX_TOKENS_REPORTED = 2**31 - 1  # the token columns are 32-bit; no real answer comes near


def _token_count(value: object) -> int | None:
    """A token count an upstream reports, or None when it is not a plausible one (negative, fractional, huge,
    a string): a broken upstream must not write a negative or an overflowing cost into the decision log."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if 0 <= value <= MAX_TOKENS_REPORTED else None


@dataclass
class Opened:
    """An upstream that answered with headers (and, for a success, its first bytes) in time."""

    target: UpstreamTarget
    response: httpx.Response
    failures: list[Failure]
    body: bytes = b""  # the whole body (plain answers and errors) or the first chunk (streams)
    usage: Usage = field(default_factory=Usage)
    rest: AsyncIterator[bytes] | None = None  # a stream's remaining (decoded) chunks

    @property
    def ok(self) -> bool:
        return self.response.status_code < 400


class UpstreamPool:
    """One AsyncClient for every upstream, so connections are reused across requests."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.gateway_timeout_s, connect=settings.gateway_connect_timeout_s),
            limits=httpx.Limits(
                max_connections=settings.gateway_max_connections,
                max_keepalive_connections=settings.gateway_max_connections,
            ),
            transport=transport,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def request(self, target: UpstreamTarget, body: dict[str, Any]) -> httpx.Request:
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        # never one of capprof's own settings, whatever a stored row or an imported file names
        name = target.api_key_env
        key = os.environ.get(name) if name and not is_own_setting(name) else None
        if key:
            headers["authorization"] = f"Bearer {key}"
        return self.client.build_request(
            "POST",
            target.endpoint_url.rstrip("/") + "/chat/completions",
            content=json.dumps({**body, "model": target.upstream_model}).encode(),
            headers=headers,
        )

    async def _try(self, target: UpstreamTarget, body: dict[str, Any], stream: bool) -> Opened:
        """Headers and first bytes from one upstream; raises httpx errors for the caller to fall back on."""
        response = await self.client.send(self.request(target, body), stream=True)
        try:
            if stream and response.status_code < 400:
                rest = response.aiter_bytes()  # decoded: an upstream may compress its stream
                first = b""
                while not first:
                    try:
                        first = await rest.__anext__()
                    except StopAsyncIteration:
                        raise EmptyStream from None
                return Opened(target, response, [], first, rest=rest)
            content = await response.aread()
        except BaseException:
            await response.aclose()
            raise
        await response.aclose()
        opened = Opened(target, response, [], content)
        if opened.ok:
            with contextlib.suppress(ValueError):
                opened.usage.read(json.loads(content))
        return opened

    async def open(self, targets: Sequence[UpstreamTarget], body: dict[str, Any], stream: bool) -> Opened:
        """The first upstream, in ranked order, that answers before failing; a request-caused 4xx stops the walk."""
        failures: list[Failure] = []
        for target in targets:
            try:
                opened = await self._try(target, body, stream)
            except httpx.TimeoutException as exc:
                failures.append(Failure(target.model, f"timeout ({type(exc).__name__})"))
                continue
            except (httpx.HTTPError, EmptyStream) as exc:
                failures.append(Failure(target.model, f"connection error ({type(exc).__name__})"))
                continue
            status = opened.response.status_code
            if status >= 400 and retryable(status):
                failures.append(Failure(target.model, f"HTTP {status}"))
                continue
            opened.failures = failures
            return opened
        raise AllUpstreamsFailed(failures)


class SseRelay:
    """Passes an upstream's server-sent events through as they arrive, reading `usage` on the way.

    When the caller did not ask for usage, the gateway asked the upstream for it anyway (for the actual cost) and
    drops the usage-only chunk again, so the caller sees the stream it asked for. It always ends with [DONE].
    """

    def __init__(self, opened: Opened, caller_wants_usage: bool) -> None:
        self.opened = opened
        self.keep_usage_chunk = caller_wants_usage
        self.usage = opened.usage
        self.done = False
        self.error: str | None = None
        self._buffer = b""

    def _events(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        *events, self._buffer = self._buffer.split(b"\n\n")
        return [e + b"\n\n" for e in events if e.strip()]

    def _filter(self, event: bytes) -> bytes | None:
        data = b"\n".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if data == b"[DONE]":
            self.done = True
            return event
        if b'"usage"' in data:
            try:
                payload = json.loads(data)
            except ValueError:
                return event
            if self.usage.read(payload) and not self.keep_usage_chunk and not payload.get("choices"):
                return None
        return event

    def _relay(self, chunk: bytes) -> bytes:
        return b"".join(e for e in (self._filter(x) for x in self._events(chunk)) if e is not None)

    async def stream(self) -> AsyncGenerator[bytes]:
        response = self.opened.response
        try:
            first = self._relay(self.opened.body)
            if first:
                yield first
            if self.opened.rest is not None:
                async for chunk in self.opened.rest:
                    out = self._relay(chunk)
                    if out:
                        yield out
            if self._buffer.strip():
                tail = self._filter(self._buffer + b"\n\n")
                self._buffer = b""
                if tail:
                    yield tail
            if not self.done:
                self.done = True
                yield DONE
        except httpx.HTTPError as exc:
            # After the first byte there is no falling back: tell the client in the stream, as OpenAI does.
            self.error = f"upstream stream broke ({type(exc).__name__})"
            message = {"error": {"message": self.error, "type": "upstream_error", "code": 502}}
            yield b"data: " + json.dumps(message).encode() + b"\n\n"
        finally:
            await response.aclose()
