#!/usr/bin/env bash
# server: the OpenAI SDK tests use the official Python package as the client.
set -euo pipefail
python3 -c 'import openai' 2>/dev/null && exit 0
echo "deps/server: pip install openai" >&2
python3 -m pip install --quiet "openai==3.54.0" >&2
