"""The official `openai` Python SDK against Sluice (which fronts the mock provider).

Run by tests/openai_sdk.rs with `--base-url http://127.0.0.1:<proxy>/sdk`; every call below
goes through a real Sluice route with the ai-proxy plugin. The SDK is given a dummy key: the
gateway injects the real one. Exits non-zero with a message on the first failure.
"""
import argparse
import sys

import openai
from openai import OpenAI


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    args = ap.parse_args()
    client = OpenAI(base_url=args.base_url, api_key="not-the-real-key", max_retries=0)

    chat = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello there"}])
    assert chat.choices[0].message.content, chat
    assert chat.usage.prompt_tokens == 2, chat.usage

    chunks = list(client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "stream please"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text, chunks
    assert all(c.choices for c in chunks), "no usage-only chunk when not asked"

    chunks = list(client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "stream please"}], stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 2, chunks[-1]

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
    tool = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "weather?"}], tools=tools)
    assert tool.choices[0].message.tool_calls[0].function.name == "get_weather", tool

    completion = client.completions.create(model="gpt-4o", prompt="say hi")
    assert completion.choices[0].text, completion

    embedding = client.embeddings.create(model="gpt-4o", input="embed me")
    assert len(embedding.data[0].embedding) > 0, embedding

    response = client.responses.create(model="gpt-4o", input="tell me")
    assert response.output_text, response
    events = list(client.responses.create(model="gpt-4o", input="tell me", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert events[-1].response.usage.input_tokens == 2, events[-1]

    image = client.images.generate(model="gpt-4o", prompt="a lighthouse")
    assert image.data and (image.data[0].url or image.data[0].b64_json), image

    # An upstream error surfaces as the SDK's typed exception: the header asks the mock
    # provider (behind Sluice) to answer 429 in OpenAI's error shape.
    failing = client.with_options(default_headers={"x-mock-status": "429"})
    try:
        failing.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    except openai.RateLimitError as error:
        assert error.status_code == 429, error
    else:
        raise AssertionError("expected openai.RateLimitError")
    # And a gateway-side rule too (own model refused) as BadRequestError.
    try:
        client.chat.completions.create(model="someone-elses-model", messages=[{"role": "user", "content": "x"}])
    except openai.BadRequestError as error:
        assert "cannot use own model" in str(error), error
    else:
        raise AssertionError("expected openai.BadRequestError")
    print("openai SDK: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
