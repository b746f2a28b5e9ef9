"""A deliberately misbehaving OpenAI-compatible upstream, on the standard library alone, for the
proxy's adversarial tests and the filter's cost benchmark: `python -m harness.fake_upstream --port PORT`.

It answers `/health` and `/v1/models` as vLLM does, and every completion request by a script named in
the last user message (or the prompt) as `#name`: the answer's text, sent whole or as a stream of
4-character pieces (`stream: true`), or a reply of the wrong shape (`#late-NAME`: streamed after a
first good event). `#long-N` answers one unbroken word of N characters, `#port` the port it listens
on ("Port 8123."). A message naming no script gets "Hello."
"""

from __future__ import annotations

import argparse
import json
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-model"

# Answers in text: what an attacker makes an upstream say.
TEXTS = {
    "cyrillic": "The books were written by J.K. R\u043ewling, with H\u0435rm\u0456\u043en\u0435 Granger.",
    "greek": "The villain is V\u03bfldem\u03bfrt.",
    "fullwidth": "Her friend is \uff32\uff4f\uff4e \uff37\uff45\uff41\uff53\uff4c\uff45\uff59.",
    "digits": "Her friends are H3rm10n3 and R0n W34sl3y; the villain is V0ld3m0rt.",
    "symbols": "Written by J.K. R0wl1ng, with Herm!one and V@ldem0rt.",
    "zero-width": "The author is Row\u200bling.",
    "innocent": "The capital of France is Paris, and 1879 was a year.",
}

# Replies of the wrong shape, whole (the JSON body) and streamed (the events' JSON).
WHOLE = {
    "content-number": {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": 42},
                                    "finish_reason": "stop"}]},
    "choice-not-object": {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL, "choices": ["hi"]},
    "list": [1, 2, 3],
    "no-choices": {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL},
    "message-not-object": {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
                           "choices": [{"index": 0, "message": "hi", "finish_reason": "stop"}]},
    "finish-number": {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."},
                                   "finish_reason": 7}]},
}
STREAMED = {
    "content-number": [{"choices": [{"index": 0, "delta": {"content": 42}, "finish_reason": None}]}],
    "choice-not-object": [{"choices": ["hi"]}],
    "list": [[1, 2, 3]],
    "no-choices": [{"id": "x", "object": "chat.completion.chunk"}],
    "message-not-object": [{"choices": [{"index": 0, "delta": "hi", "finish_reason": None}]}],
    "finish-number": [{"choices": [{"index": 0, "delta": {"content": "Hi."}, "finish_reason": 7}]}],
    "not-json": "{not json",
}


def script_of(body: dict) -> str | None:
    messages = body.get("messages")
    text = messages[-1].get("content", "") if isinstance(messages, list) and messages else body.get("prompt", "")
    found = re.search(r"#([\w-]+)", str(text))
    return found.group(1) if found else None


def text_of(script: str | None, port: int = 0) -> str:
    if script and (long := re.fullmatch(r"long-(\d+)", script)):
        return "a" * int(long.group(1))
    if script == "port":
        return f"Port {port}."
    return TEXTS.get(script or "", "Hello.")


def pieces(text: str, size: int = 4) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, b"{}")
        elif self.path.rstrip("/").endswith("/models"):
            self._send(200, json.dumps({"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": 0, "owned_by": "fake", "max_model_len": 2048}]}).encode())
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        chat = self.path.endswith("/chat/completions")
        script = script_of(body)
        if body.get("stream"):
            return self._stream(chat, script)
        if script in WHOLE:
            return self._send(200, json.dumps(WHOLE[script]).encode())
        text = text_of(script, self.server.server_address[1])
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"} if chat
                  else {"index": 0, "text": text, "finish_reason": "stop"})
        self._send(200, json.dumps({"id": "fake-1", "object": "chat.completion" if chat else "text_completion",
                                    "created": int(time.time()), "model": MODEL, "choices": [choice]}).encode())

    def _stream(self, chat: bool, script: str | None) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        head = {"id": "fake-1", "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": MODEL}

        def event(text: str | None, finish: str | None) -> str:
            choice = ({"index": 0, "delta": {"content": text} if text is not None else {}, "finish_reason": finish}
                      if chat else {"index": 0, "text": text or "", "finish_reason": finish})
            return json.dumps({**head, "choices": [choice]})
        bad = (script or "").removeprefix("late-")
        if bad in STREAMED:
            events = STREAMED[bad]
            datas = ([event("Hi ", None)] if script.startswith("late-") else []) + (
                [events] if isinstance(events, str) else [json.dumps(e) for e in events])
        else:
            text = text_of(script, self.server.server_address[1])
            datas = [event(piece, None) for piece in pieces(text)] + [event(None, "stop")]
        try:
            for data in datas:
                self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
