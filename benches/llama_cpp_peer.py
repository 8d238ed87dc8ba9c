"""llama.cpp (llama-cpp-python) side of benches/benches/inference_vs_llama_cpp.rs.

Reads JSON from stdin: {"model", "threads", "prompt_ids", "decode_tokens", "runs"}
and prints JSON: {"prefill_tokens_per_s": [...], "decode_tokens_per_s": [...], "system_info"}.
Greedy decoding on the raw logits, the same work the Rust side does.
"""
import json
import sys
import time

import llama_cpp
from llama_cpp import Llama

cfg = json.load(sys.stdin)
llm = Llama(model_path=cfg["model"], n_threads=cfg["threads"], n_threads_batch=cfg["threads"],
            n_ctx=1024, n_batch=512, verbose=False)
prompt = cfg["prompt_ids"]
prefill, decode = [], []
for _ in range(cfg["runs"]):
    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt)
    prefill.append(len(prompt) / (time.perf_counter() - t))
    tok = int(llm.scores[llm.n_tokens - 1].argmax())
    t = time.perf_counter()
    for _ in range(cfg["decode_tokens"]):
        llm.eval([tok])
        tok = int(llm.scores[llm.n_tokens - 1].argmax())
    decode.append(cfg["decode_tokens"] / (time.perf_counter() - t))
print(json.dumps({
    "prefill_tokens_per_s": prefill,
    "decode_tokens_per_s": decode,
    "system_info": llama_cpp.llama_print_system_info().decode(),
}))
