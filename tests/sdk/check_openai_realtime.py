"""The official `openai` Python SDK's Realtime client against Sluice (ai-proxy-advanced with a
realtime target in front of the mock provider).

Run by tests/openai_sdk.rs with `--base-url http://127.0.0.1:<proxy>/sdk-rt`. The SDK is given a
dummy key and no model of its own is trusted: the gateway injects both. One session through the
GA client (`client.realtime`, which turns an http base URL into ws), and one through the beta
client (`client.beta.realtime`, `OpenAI-Beta: realtime=v1`) when this SDK still has it. Prints one
JSON line per session: the text received and the usage of each `response.done`.
"""
import argparse
import json
import sys

from openai import OpenAI

MODEL = "gpt-4o-realtime-preview"


def session(connect, delta_type, text_field):
    said, usages = "", []
    with connect(model=MODEL) as connection:
        first = connection.recv()
        assert first.type == "session.created", first
        for words in ["one two three", "four five"]:
            connection.conversation.item.create(item={
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": words}],
            })
            for event in connection:
                if event.type == "conversation.item.created":
                    break
            connection.response.create()
            for event in connection:
                if event.type == delta_type:
                    said += getattr(event, text_field)
                elif event.type == "response.done":
                    usage = event.response.usage
                    usages.append({"input": usage.input_tokens, "output": usage.output_tokens,
                                   "total": usage.total_tokens})
                    break
                elif event.type == "error":
                    raise AssertionError(f"error event: {event}")
    return {"said": said, "usages": usages}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    args = ap.parse_args()
    ws_base = args.base_url.replace("http://", "ws://", 1)
    client = OpenAI(base_url=args.base_url, api_key="not-the-real-key", max_retries=0,
                    websocket_base_url=ws_base)
    results = []
    if hasattr(client, "realtime"):
        results.append(("ga", session(client.realtime.connect, "response.output_text.delta", "delta")))
    if hasattr(client, "beta") and hasattr(client.beta, "realtime"):
        results.append(("beta", session(client.beta.realtime.connect, "response.text.delta", "delta")))
    if not results:
        print("this openai SDK has no realtime client", file=sys.stderr)
        return 1
    for name, result in results:
        print(json.dumps({"client": name, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
