"""Fake Amazon Bedrock Runtime: Converse / ConverseStream / InvokeModel / InvokeModelWithResponseStream.

JSON shapes follow botocore's ``bedrock-runtime`` service model (``ConverseResponse``,
``TokenUsage``, ``ConverseStreamOutput``, ``ResponseStream``); streams use the binary
``application/vnd.amazon.eventstream`` framing botocore decodes: a 12-byte prelude (total
length, headers length, CRC32 of those 8 bytes), typed headers, the payload and a CRC32 of
the whole message. InvokeModel bodies are the model families' own formats (Anthropic, Meta
Llama, Amazon Nova, Mistral, Cohere), with the token-count headers Bedrock adds to every
InvokeModel response. The anthropic SDK's ``AnthropicBedrock`` client uses the same routes.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from tokentrail.testing import anthropic_api
from tokentrail.testing.server import FakeProviderServer, FakeRequest, FakeResponse

EVENTSTREAM = "application/vnd.amazon.eventstream"
_REGION_PREFIXES = ("us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.")


# --- binary event-stream framing ------------------------------------------------------------
def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    # type 7 = UTF-8 string with a 2-byte length
    return struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", 7, len(raw_value)) + raw_value


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with correct prelude and message CRC32s."""
    header_bytes = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(header_bytes) + len(payload) + 4
    prelude = struct.pack("!II", total, len(header_bytes))
    prelude += struct.pack("!I", zlib.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + header_bytes + payload
    return message + struct.pack("!I", zlib.crc32(message) & 0xFFFFFFFF)


def event_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    return frame(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(payload, separators=(",", ":")).encode(),
    )


def exception_frame(exception_type: str, text: str = "fake stream error") -> bytes:
    """A modelled stream exception (``throttlingException``, ``modelStreamErrorException``, ...)."""
    return frame(
        {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"},
        json.dumps({"message": text}).encode(),
    )


def chunk_frame(body: dict[str, Any]) -> bytes:
    """An InvokeModelWithResponseStream ``chunk`` event: the model's JSON, base64 in ``bytes``."""
    return event_frame("chunk", {"bytes": base64.b64encode(json.dumps(body).encode()).decode(), "p": "abcd"})


# --- scenario: one call's usage, rendered in every API shape ---------------------------------
@dataclass(frozen=True)
class Call:
    """What one fake model call reports. ``input_tokens`` excludes cache reads and writes,
    as Bedrock reports it (``totalTokens`` = input + output + cache read + cache write)."""

    input_tokens: int = 8000
    output_tokens: int = 1200
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    text: str = "Hello from the fake Bedrock model."
    stop_reason: str = "end_turn"
    tool_use: dict[str, Any] | None = None
    message_id: str = "msg_01FakeBedrock0000000001"

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    def token_usage(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "totalTokens": self.input_tokens + self.output_tokens + self.cache_read + self.cache_write,
        }
        if self.cache_read or self.cache_write:
            usage["cacheReadInputTokens"] = self.cache_read
            usage["cacheWriteInputTokens"] = self.cache_write
        details = [{"ttl": ttl, "inputTokens": n} for ttl, n in (("1h", self.cache_write_1h), ("5m", self.cache_write_5m)) if n]
        if details:
            usage["cacheDetails"] = details
        return usage

    def invocation_metrics(self) -> dict[str, Any]:
        metrics = {
            "inputTokenCount": self.input_tokens,
            "outputTokenCount": self.output_tokens,
            "invocationLatency": 420,
            "firstByteLatency": 120,
        }
        if self.cache_read or self.cache_write:
            metrics["cacheReadInputTokenCount"] = self.cache_read
            metrics["cacheWriteInputTokenCount"] = self.cache_write
        return metrics

    def count_headers(self) -> dict[str, str]:
        headers = {
            "X-Amzn-Bedrock-Input-Token-Count": str(self.input_tokens),
            "X-Amzn-Bedrock-Output-Token-Count": str(self.output_tokens),
            "X-Amzn-Bedrock-Invocation-Latency": "420",
        }
        if self.cache_read or self.cache_write:
            headers["X-Amzn-Bedrock-Cache-Read-Input-Token-Count"] = str(self.cache_read)
            headers["X-Amzn-Bedrock-Cache-Write-Input-Token-Count"] = str(self.cache_write)
        return headers

    def anthropic_usage(self) -> dict[str, Any]:
        return anthropic_api.usage_block(
            self.input_tokens,
            self.output_tokens,
            cache_read_input_tokens=self.cache_read,
            cache_creation_5m=self.cache_write_5m,
            cache_creation_1h=self.cache_write_1h,
        )


DEFAULT_CALL = Call()


# --- Converse -------------------------------------------------------------------------------
def converse(call: Call = DEFAULT_CALL) -> FakeResponse:
    content: list[dict[str, Any]] = [{"text": call.text}]
    if call.tool_use:
        content.append({"toolUse": call.tool_use})
    return FakeResponse(
        json={
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": call.stop_reason,
            "usage": call.token_usage(),
            "metrics": {"latencyMs": 420},
        }
    )


def converse_stream(call: Call = DEFAULT_CALL, *, error_after: int | None = None, error: str = "modelStreamErrorException",
                    text_pieces: int = 2) -> FakeResponse:
    """ConverseStream frames; ``error_after`` replaces the rest after that many frames with an exception frame."""
    size = max(1, -(-len(call.text) // max(1, text_pieces)))
    frames = [event_frame("messageStart", {"role": "assistant", "p": "ab"})]
    frames += [event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": call.text[i:i + size]}, "p": "ab"})
               for i in range(0, len(call.text), size)]
    frames.append(event_frame("contentBlockStop", {"contentBlockIndex": 0, "p": "ab"}))
    if call.tool_use:
        tool = call.tool_use
        frames += [
            event_frame("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": tool["toolUseId"], "name": tool["name"]}}}),
            event_frame("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": json.dumps(tool["input"])}}}),
            event_frame("contentBlockStop", {"contentBlockIndex": 1}),
        ]
    frames += [
        event_frame("messageStop", {"stopReason": call.stop_reason, "p": "ab"}),
        event_frame("metadata", {"usage": call.token_usage(), "metrics": {"latencyMs": 420}, "p": "ab"}),
    ]
    if error_after is not None:
        frames = frames[:error_after] + [exception_frame(error)]
    return FakeResponse(body=iter(frames), content_type=EVENTSTREAM)


# --- InvokeModel bodies per model family ------------------------------------------------------
def family(model_id: str) -> str:
    """anthropic | meta | nova | mistral | cohere | unknown, from a model or inference-profile id."""
    model = model_id.rsplit("/", 1)[-1]
    for prefix in _REGION_PREFIXES:
        if model.startswith(prefix):
            model = model[len(prefix):]
            break
    if model.startswith("anthropic."):
        return "anthropic"
    if model.startswith("meta."):
        return "meta"
    if model.startswith("amazon.nova"):
        return "nova"
    if model.startswith("mistral."):
        return "mistral"
    if model.startswith("cohere."):
        return "cohere"
    return "unknown"


def invoke_body(model_id: str, call: Call = DEFAULT_CALL) -> dict[str, Any]:
    kind = family(model_id)
    if kind == "anthropic":
        return anthropic_api.message(model=_anthropic_model(model_id), usage=call.anthropic_usage(),
                                     content=[anthropic_api.text_block(call.text)], stop_reason=call.stop_reason,
                                     message_id=call.message_id)
    if kind == "meta":
        return {"generation": call.text, "prompt_token_count": call.input_tokens,
                "generation_token_count": call.output_tokens, "stop_reason": "stop"}
    if kind == "nova":
        usage = {"inputTokens": call.input_tokens, "outputTokens": call.output_tokens,
                 "totalTokens": call.input_tokens + call.output_tokens + call.cache_read + call.cache_write,
                 "cacheReadInputTokenCount": call.cache_read, "cacheWriteInputTokenCount": call.cache_write}
        return {"output": {"message": {"role": "assistant", "content": [{"text": call.text}]}},
                "stopReason": call.stop_reason, "usage": usage}
    if kind == "mistral":  # no usage in the body: only the count headers carry it
        return {"outputs": [{"text": call.text, "stop_reason": "stop"}]}
    if kind == "cohere":
        return {"generation_id": "gen-1", "text": call.text, "finish_reason": "COMPLETE", "chat_history": []}
    return {"output": call.text}


def invoke(model_id: str, call: Call = DEFAULT_CALL) -> FakeResponse:
    return FakeResponse(json=invoke_body(model_id, call), headers=call.count_headers())


def invoke_stream_chunks(model_id: str, call: Call = DEFAULT_CALL) -> list[dict[str, Any]]:
    """The JSON chunks of InvokeModelWithResponseStream; the last carries invocation metrics."""
    kind = family(model_id)
    metrics = {"amazon-bedrock-invocationMetrics": call.invocation_metrics()}
    half = len(call.text) // 2
    if kind == "anthropic":
        events = anthropic_api.message_events(model=_anthropic_model(model_id), usage=call.anthropic_usage(),
                                              content=[anthropic_api.text_block(call.text)], stop_reason=call.stop_reason,
                                              message_id=call.message_id)
        chunks = [data for _, data in events if data["type"] != "ping"]
        chunks[-1] = {**chunks[-1], **metrics}
        return chunks
    if kind == "meta":
        return [
            {"generation": call.text[:half], "prompt_token_count": call.input_tokens, "generation_token_count": 1, "stop_reason": None},
            {"generation": call.text[half:], "prompt_token_count": None, "generation_token_count": call.output_tokens,
             "stop_reason": "stop", **metrics},
        ]
    if kind == "nova":
        return [
            {"messageStart": {"role": "assistant"}},
            {"contentBlockDelta": {"delta": {"text": call.text[:half]}, "contentBlockIndex": 0}},
            {"contentBlockDelta": {"delta": {"text": call.text[half:]}, "contentBlockIndex": 0}},
            {"contentBlockStop": {"contentBlockIndex": 0}},
            {"messageStop": {"stopReason": call.stop_reason}},
            {"metadata": {"usage": {"inputTokens": call.input_tokens, "outputTokens": call.output_tokens,
                                    "cacheReadInputTokenCount": call.cache_read,
                                    "cacheWriteInputTokenCount": call.cache_write}}, **metrics},
        ]
    if kind == "mistral":
        return [{"outputs": [{"text": call.text[:half], "stop_reason": None}]},
                {"outputs": [{"text": call.text[half:], "stop_reason": "stop"}], **metrics}]
    if kind == "cohere":
        return [{"is_finished": False, "event_type": "text-generation", "text": call.text[:half]},
                {"is_finished": False, "event_type": "text-generation", "text": call.text[half:]},
                {"is_finished": True, "event_type": "stream-end", "finish_reason": "COMPLETE", **metrics}]
    return [{"output": call.text, **metrics}]


def invoke_stream(model_id: str, call: Call = DEFAULT_CALL, *, error_after: int | None = None,
                  error: str = "modelStreamErrorException") -> FakeResponse:
    frames = [chunk_frame(chunk) for chunk in invoke_stream_chunks(model_id, call)]
    if error_after is not None:
        frames = frames[:error_after] + [exception_frame(error)]
    return FakeResponse(body=iter(frames), content_type=EVENTSTREAM,
                        headers={"X-Amzn-Bedrock-Content-Type": "application/json"})


def error(status: int, code: str, text: str = "fake error") -> FakeResponse:
    """A Bedrock error (``ThrottlingException`` 429, ``ValidationException`` 400, ...)."""
    return FakeResponse(status=status, json={"message": text}, headers={"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/"})


def _anthropic_model(model_id: str) -> str:
    # Bedrock answers with the plain Anthropic model name.
    name = model_id.rsplit("/", 1)[-1]
    for prefix in _REGION_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    name = name.removeprefix("anthropic.")
    return name.rsplit("-v", 1)[0] if "-v" in name else name


# --- routes -------------------------------------------------------------------------------
def _model(request: FakeRequest) -> str:
    return unquote(request.match.group("model"))


def _converse_stream(request: FakeRequest) -> FakeResponse:
    raw = request.headers.get(anthropic_api.DELTAS_HEADER, "")
    pieces = int(raw) if raw.isdigit() and 0 < int(raw) <= 10_000 else 2
    if pieces == 2:
        return converse_stream()
    return converse_stream(Call(text="token " * pieces), text_pieces=pieces)


def register(server: FakeProviderServer) -> None:
    server.route("POST", r"/model/(?P<model>[^/]+)/converse", lambda r: converse())
    server.route("POST", r"/model/(?P<model>[^/]+)/converse-stream", _converse_stream)
    server.route("POST", r"/model/(?P<model>[^/]+)/invoke", lambda r: invoke(_model(r)))
    server.route("POST", r"/model/(?P<model>[^/]+)/invoke-with-response-stream", lambda r: invoke_stream(_model(r)))
