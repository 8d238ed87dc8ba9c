"""The official OpenAI Python SDK through `confidant proxy`.

Run by server/tests/attested.rs with:
  CONFIDANT_BASE_URL  http://127.0.0.1:PORT/v1 (the local proxy)
  CONFIDANT_MODEL_ID  the served model id
  CONFIDANT_API_KEY   an API key of the upstream server (may be empty)
Usage: python3 attested_proxy.py ok|refused
"""

import os
import sys

import openai
from openai import OpenAI

BASE = os.environ["CONFIDANT_BASE_URL"]
MODEL = os.environ["CONFIDANT_MODEL_ID"]
KEY = os.environ.get("CONFIDANT_API_KEY") or "unused"
QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def ok():
    c = OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=180)
    r = c.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24)
    text = r.choices[0].message.content
    print("chat:", repr(text))
    check("Paris" in text, f"expected Paris in {text!r}")
    extra = r.model_extra or {}
    check("receipt" in extra, f"non-streamed response has a receipt field: {extra}")

    stream = c.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=24, stream=True
    )
    parts, receipts = [], []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if (chunk.model_extra or {}).get("receipt"):
            receipts.append(chunk.model_extra["receipt"])
    streamed = "".join(parts)
    print("stream:", repr(streamed))
    check(streamed == text, f"greedy stream {streamed!r} != {text!r}")
    check(len(receipts) == 1, f"one receipt in the stream, got {len(receipts)}")


def refused():
    c = OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=60)
    try:
        c.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)
    except openai.APIStatusError as e:
        print("refused:", e.status_code, e.message)
        check(e.status_code == 502, f"status {e.status_code}")
        check("attestation" in str(e.message) or "verify" in str(e.message), e.message)
        return
    raise AssertionError("the proxy forwarded a request to a server that failed verification")


if __name__ == "__main__":
    {"ok": ok, "refused": refused}[sys.argv[1]]()
