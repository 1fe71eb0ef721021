"""CPU cost of one upstream call as the prompt grows: our provider vs the typed SDK call.

The fake upstream runs in its own process so only the client side is measured.

    .venv/bin/python bench/openai_call_cost.py [--calls 30] [--smoke]

--smoke: two small prompts and two calls each, only to prove the benchmark runs
(tests/e2e/test_bench_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from openai import AsyncOpenAI, DefaultAsyncHttpxClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = (1, 100, 400, 1000)
SMOKE_SIZES = (1, 10)
WARM_UP_CALLS = 3

from llm_agent.providers.base import GenerationParams  # noqa: E402
from llm_agent.providers.openai import OpenAIProvider  # noqa: E402
from llm_agent.settings import Settings  # noqa: E402


def prompt(size: int) -> list[dict[str, str]]:
    turns = [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"Message {i}: " + "a fairly ordinary sentence of chat text. " * 4,
        }
        for i in range(size - 1)
    ]
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        *turns,
        {"role": "user", "content": "And now?"},
    ][-size:]


async def cpu_ms_per_call(call: Callable[[], Awaitable[object]], calls: int, warm_up: int) -> float:
    for _ in range(warm_up):
        await call()
    started = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - started) * 1000 / calls


async def main(calls: int, sizes: tuple[int, ...], warm_up: int) -> None:
    # Started once, before anything is measured: blocking here costs nothing measured.
    fake = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "tests.fakes.openai_server"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert fake.stdout is not None
    base_url = fake.stdout.readline().strip().removeprefix("FAKE_OPENAI_URL=")
    settings = Settings(
        _env_file=None, llm_provider="openai", openai_api_key="sk-bench", openai_base_url=base_url
    )
    provider = OpenAIProvider(settings)
    sdk = AsyncOpenAI(api_key="sk-bench", base_url=base_url, max_retries=0)
    # The SDK's own HTTP client class: "raw http" is the same transport without the SDK.
    raw = DefaultAsyncHttpxClient(base_url=base_url, headers={"Authorization": "Bearer sk-bench"})
    try:
        header = f"{'messages':>8} {'provider':>10} {'sdk create()':>13} {'raw http':>9}"
        print(header + "  (CPU ms per call)")
        for size in sizes:
            params = GenerationParams(
                messages=prompt(size), model="gpt-4o-mini", temperature=0.7, max_tokens=256
            )
            body = OpenAIProvider.request_body(params, stream=False)

            async def ours(params: GenerationParams = params) -> object:
                return await provider.complete(params)

            async def typed(params: GenerationParams = params) -> object:
                return await sdk.chat.completions.create(
                    model=params.model,
                    messages=params.messages,  # type: ignore[arg-type]
                    temperature=params.temperature,
                    max_tokens=params.max_tokens,
                )

            async def plain(body: dict[str, object] = body) -> object:
                return (await raw.post("/chat/completions", json=body)).json()

            results = [await cpu_ms_per_call(f, calls, warm_up) for f in (ours, typed, plain)]
            print(f"{size:>8} {results[0]:>10.2f} {results[1]:>13.2f} {results[2]:>9.2f}")
    finally:
        await provider.aclose()
        await sdk.close()
        await raw.aclose()
        fake.terminate()
        fake.wait()
        fake.stdout.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--smoke", action="store_true", help="a few fast calls: does it run?")
    args = parser.parse_args()
    if args.smoke:
        asyncio.run(main(calls=2, sizes=SMOKE_SIZES, warm_up=1))
    else:
        asyncio.run(main(args.calls, SIZES, WARM_UP_CALLS))
