"""A job's streamed answer over engines: the choices' chunks merged as they come, turned into the
stream's events (server.protocol.sse writes them), each choice's state kept in the job and recorded
once the client has its whole answer."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import AsyncIterator

from server.protocol import responses
from server.protocol.requests import Reader
from server.serving.base import CompletionJob
from server.serving.decisions import Decisions
from server.serving.generate.generation import Chunk


async def merged(streams: list[AsyncIterator[Chunk]]) -> AsyncIterator[tuple[int, Chunk]]:
    """The chunks of several streams as they come, each with the index of its stream. A stream's
    failure is raised here; closing this (or that failure) closes them all."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(index: int, stream: AsyncIterator[Chunk]) -> None:
        try:
            async with aclosing(stream):
                async for chunk in stream:
                    await queue.put((index, chunk))
        except Exception as exc:  # noqa: BLE001 - handed to the reader
            await queue.put((index, exc))
        await queue.put((index, done))

    tasks = [asyncio.create_task(pump(i, stream)) for i, stream in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is done:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def first_chunk(chunks: AsyncIterator[tuple[int, Chunk]]) -> tuple[int, Chunk]:
    try:
        return await anext(chunks)
    except BaseException:
        await chunks.aclose()
        raise


async def streamed(job: CompletionJob, first: tuple[int, Chunk], chunks: AsyncIterator[tuple[int, Chunk]],
                   readers: list[Reader] | None, decisions: Decisions) -> AsyncIterator[responses.Chunk]:
    """The stream's events, from the first chunk on; `readers`: each choice's tool-call reader, where
    the answers are tool calls."""
    kind, model = job.kind, job.body.model
    async with aclosing(chunks):
        for event in responses.opening(kind, job.id, model, job.body.n):
            yield event
        offsets = [0] * job.body.n
        index, chunk = first
        while True:
            choice = job.choices[index]
            if chunk.text or chunk.logprobs:
                logprobs = responses.logprobs(kind, chunk.logprobs, offsets[index]) if chunk.logprobs else None
                choice.text += chunk.text
                offsets[index] += sum(len(p.sampled.token) for p in chunk.logprobs)
                if readers is None:
                    yield responses.chunk(kind, job.id, model, chunk.text, index=index, logprobs=logprobs)
                elif (read := readers[index].feed(chunk.text)).content or read.calls or logprobs:
                    yield responses.chunk(kind, job.id, model, read.content, index=index, logprobs=logprobs,
                                          tool_calls=read.calls)
            if chunk.finish_reason is not None:
                finish_reason = chunk.finish_reason
                if readers is not None:
                    if (read := readers[index].finish()).content:
                        yield responses.chunk(kind, job.id, model, read.content, index=index)
                    finish_reason = readers[index].finish_reason(finish_reason)
                yield responses.chunk(kind, job.id, model, None, finish_reason, index=index)
                choice.finish_reason, choice.violations = chunk.finish_reason, chunk.violations
                choice.completion_tokens = chunk.completion_tokens
                decisions.record(job)
                if all(c.finished for c in job.choices):
                    decisions.tokens(job)
                    if job.body.include_usage:
                        yield responses.usage_chunk(kind, job.id, model,
                                                    responses.usage(job.prompt_tokens, job.completion_tokens))
                    return
            index, chunk = await anext(chunks)
