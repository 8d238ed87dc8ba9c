"""Integration checks of `confidant serve` with the official OpenAI Python SDK.

Run by server/tests/openai_sdk.rs, which starts the server and passes:
  CONFIDANT_BASE_URL      e.g. http://127.0.0.1:PORT/v1
  CONFIDANT_MODEL_ID      the served model id
  EXPECTED_PROMPT_TOKENS  prompt tokens of the chat below, per our tokenizer
Usage: python3 openai_sdk.py basic|concurrency
"""

import asyncio
import json
import os
import re
import sys
import time

import httpx2 as httpx
import openai
from openai import AsyncOpenAI, OpenAI

BASE = os.environ["CONFIDANT_BASE_URL"]
MODEL = os.environ["CONFIDANT_MODEL_ID"]
QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]


def client():
    return OpenAI(base_url=BASE, api_key="unused", max_retries=0, timeout=120)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def basic():
    c = client()
    expected_prompt = int(os.environ["EXPECTED_PROMPT_TOKENS"])

    models = c.models.list()
    check([m.id for m in models.data] == [MODEL], f"models: {models}")

    # Non-streaming chat: coherent text from the real model, exact usage.
    r = c.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=40)
    text = r.choices[0].message.content
    print("chat:", repr(text))
    check("Paris" in text, f"expected Paris in {text!r}")
    check(r.choices[0].finish_reason == "stop", r.choices[0].finish_reason)
    check(r.object == "chat.completion" and r.id.startswith("chatcmpl-"), r)
    check(r.model == MODEL and isinstance(r.created, int), r)
    u = r.usage
    check(u.prompt_tokens == expected_prompt, f"prompt_tokens {u.prompt_tokens} != {expected_prompt}")
    check(1 <= u.completion_tokens <= 40, u)
    check(u.total_tokens == u.prompt_tokens + u.completion_tokens, u)

    # Streaming, with the usage chunk: same greedy text, same counts.
    stream = c.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=40,
        stream=True, stream_options={"include_usage": True},
    )
    parts, finish, usage, roles = [], None, None, []
    for chunk in stream:
        check(chunk.object == "chat.completion.chunk", chunk)
        if chunk.usage is not None:
            check(chunk.choices == [], "usage chunk carries no choices")
            usage = chunk.usage
            continue
        d = chunk.choices[0].delta
        if d.role:
            roles.append(d.role)
        if d.content:
            parts.append(d.content)
        if chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    streamed = "".join(parts)
    print("stream:", repr(streamed))
    check(roles == ["assistant"], roles)
    check(streamed == text, f"streamed {streamed!r} != {text!r}")
    check(finish == r.choices[0].finish_reason, finish)
    check(usage is not None and usage.prompt_tokens == expected_prompt, usage)
    check(usage.completion_tokens == u.completion_tokens, (usage, u))

    # max_tokens is honoured and reported as `length`.
    r = c.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=3)
    check(r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length", r)

    # Legacy completions.
    r = c.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=8)
    print("completion:", repr(r.choices[0].text))
    check(r.choices[0].text.startswith(" Paris"), r.choices[0].text)
    check(r.usage.prompt_tokens == 5, r.usage)

    # Stop sequences end generation and are not part of the output.
    r = c.completions.create(model=MODEL, prompt="The capital of France is", temperature=0,
                             max_tokens=30, stop=["."])
    check("." not in r.choices[0].text and r.choices[0].finish_reason == "stop", r)

    # Same seed, same sampled text.
    a = c.chat.completions.create(model=MODEL, messages=QUESTION, temperature=1.0, seed=7, max_tokens=24)
    b = c.chat.completions.create(model=MODEL, messages=QUESTION, temperature=1.0, seed=7, max_tokens=24)
    check(a.choices[0].message.content == b.choices[0].message.content, "seeded outputs differ")

    # Errors: a 4xx with OpenAI's error object.
    try:
        c.chat.completions.create(model=MODEL, messages=QUESTION, n=2)
        raise AssertionError("n=2 accepted")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and e.body["param"] == "n", e.body)
        check("n = 1" in e.body["message"], e.body)
    try:
        c.chat.completions.create(model="no-such-model", messages=QUESTION)
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as e:
        check(e.status_code == 404 and e.body["code"] == "model_not_found", e.body)
    try:
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi " * 9000}])
        raise AssertionError("over-long prompt accepted")
    except openai.BadRequestError as e:
        check(e.body["code"] == "context_length_exceeded", e.body)
        check(re.search(r"maximum context length is \d+ tokens", e.body["message"]), e.body)

    raw = httpx.post(BASE + "/chat/completions", content=b'{"model": "x", "messages": [',
                     headers={"content-type": "application/json"})
    body = raw.json()
    check(raw.status_code == 400 and body["error"]["type"] == "invalid_request_error", (raw.status_code, body))
    big = httpx.post(BASE + "/chat/completions", content=b"x" * (2 << 20),
                     headers={"content-type": "application/json"})
    check(big.status_code == 413 and "error" in big.json(), (big.status_code, big.text[:200]))
    print("RESULT " + json.dumps({"text": text, "completion_tokens": u.completion_tokens,
                                  "finish_reason": "stop"}))
    print("basic: ok")


def metric(name):
    text = httpx.get(BASE.removesuffix("/v1") + "/metrics").text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


async def one_stream(ac, i):
    stream = await ac.chat.completions.create(
        model=MODEL, temperature=0.8, seed=i, max_tokens=48,
        messages=[{"role": "user", "content": f"Write a short sentence about the number {i}."}],
        stream=True, stream_options={"include_usage": True},
    )
    text, usage = [], None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        elif chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
    return "".join(text), usage


async def concurrency():
    ac = AsyncOpenAI(base_url=BASE, api_key="unused", max_retries=0, timeout=300)
    t = time.time()
    results = await asyncio.gather(*(one_stream(ac, i) for i in range(16)))
    print(f"16 streams in {time.time() - t:.1f}s")
    for text, usage in results:
        check(usage is not None and usage.completion_tokens >= 1, usage)
        check(len(text) > 0, "empty stream")

    # A client that disconnects mid-stream frees its slot.
    before = metric("confidant_engine_cancelled_total") or 0
    with httpx.stream("POST", BASE + "/chat/completions", json={
        "model": MODEL, "stream": True, "max_tokens": 2000, "ignore_eos": True,
        "messages": [{"role": "user", "content": "Count to one thousand."}],
    }, timeout=60) as resp:
        check(resp.status_code == 200, resp.status_code)
        n = 0
        for line in resp.iter_lines():
            if line.startswith("data: "):
                n += 1
            if n >= 5:
                break
    deadline = time.time() + 30
    while time.time() < deadline:
        if metric("confidant_engine_cancelled_total") > before and metric("confidant_active_sequences") == 0:
            break
        time.sleep(0.2)
    check(metric("confidant_engine_cancelled_total") > before, "cancellation not counted")
    check(metric("confidant_active_sequences") == 0, "slot not freed")
    check(metric("confidant_client_disconnects_total") >= 1, "disconnect not counted")
    print("concurrency: ok")


if __name__ == "__main__":
    {"basic": basic, "concurrency": lambda: asyncio.run(concurrency())}[sys.argv[1]]()
