"""The data pipeline's stage functions on constructed inputs with known answers: strategy sampling,
generation checks, dedup, score parsing, filters, transcripts for the judge."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from simgate.runner.errors import RunnerError
from simgate.runner.pipeline.catalogue import Catalogue, CatalogueServer, CatalogueTool
from simgate.runner.pipeline.dedup import dedup_minhash, normalized
from simgate.runner.pipeline.filters import compile_filter, passes
from simgate.runner.pipeline.judge import ratings
from simgate.runner.pipeline.prompts import shorten, transcript
from simgate.runner.pipeline.strategies import Plan, Strategy, plan_tasks
from simgate.runner.pipeline.synth import check_generation


def _server(name: str, category: str, tools: int = 3) -> CatalogueServer:
    return CatalogueServer(name=name, category=category, tools=[
        CatalogueTool(name=f"{name}__tool_{i}", tool=f"tool_{i}", description=f"tool {i} of {name}")
        for i in range(tools)])


CATALOGUE = Catalogue(servers=[_server("alpha", "Weather"), _server("beta", "Weather"), _server("gamma", "Gaming"),
                               _server("delta", "Education", tools=1)])


def test_uniform_gives_k_per_server_and_plans_are_reproducible() -> None:
    plans = plan_tasks(CATALOGUE, Strategy.SINGLE_UNIFORM, 0, per_server=3, seed=7)
    assert Counter(plan.servers[0] for plan in plans) == {"alpha": 3, "beta": 3, "gamma": 3, "delta": 3}
    assert all(1 <= plan.num_tools <= 3 for plan in plans)
    assert all(plan.num_tools == 1 for plan in plans if plan.servers == ["delta"])  # it has one tool
    assert plans == plan_tasks(CATALOGUE, Strategy.SINGLE_UNIFORM, 0, per_server=3, seed=7)
    assert plans != plan_tasks(CATALOGUE, Strategy.SINGLE_UNIFORM, 0, per_server=3, seed=8)


def test_power_law_follows_the_usage_rank() -> None:
    plans = plan_tasks(CATALOGUE, Strategy.SINGLE_POWER_LAW, 4000, usage_rank=["gamma", "alpha", "beta", "delta"],
                       alpha=1.0)
    counts = Counter(plan.servers[0] for plan in plans)
    # 1/rank normalized: 0.48, 0.24, 0.16, 0.12
    assert counts["gamma"] > counts["alpha"] > counts["beta"] > counts["delta"]
    assert abs(counts["gamma"] / 4000 - 0.48) < 0.04 and abs(counts["delta"] / 4000 - 0.12) < 0.03


def test_multi_server_strategies_respect_categories_and_featured() -> None:
    same = plan_tasks(CATALOGUE, Strategy.MULTI_SAME_CATEGORY, 50)
    assert all(set(plan.servers) == {"alpha", "beta"} for plan in same)  # the only category with two servers
    different = plan_tasks(CATALOGUE, Strategy.MULTI_DIFFERENT_CATEGORIES, 50)
    categories = {s.name: s.category for s in CATALOGUE.servers}
    assert all(len({categories[n] for n in plan.servers}) == len(plan.servers) >= 2 for plan in different)
    assert all(plan.num_tools >= len(plan.servers) for plan in different if len(plan.servers) <= 3)
    featured = plan_tasks(CATALOGUE, Strategy.SINGLE_FEATURED, 30, featured=["gamma", "nope"])
    assert {plan.servers[0] for plan in featured} == {"gamma"}
    with pytest.raises(RunnerError, match="needs --featured servers"):
        plan_tasks(CATALOGUE, Strategy.MULTI_BRAINSTORM, 3, featured=["nope"])
    with pytest.raises(RunnerError, match="two servers of one category"):
        plan_tasks(Catalogue(servers=[_server("a", "X"), _server("b", "Y")]), Strategy.MULTI_SAME_CATEGORY, 1)


def test_generation_checks_drop_what_a_task_must_not_be() -> None:
    plan = Plan(index=0, strategy=Strategy.SINGLE_RANDOM, servers=["alpha"], num_tools=2)
    good = {"question": "Which of my cities will be warmest tomorrow?", "target_tools": ["alpha__tool_0",
                                                                                        "alpha__tool_1"]}
    assert check_generation(good, plan, CATALOGUE) == (good, None)
    assert check_generation({**good, "target_tools": ["alpha__tool_0", "beta__tool_0"]}, plan, CATALOGUE)[1] == \
        "unknown target tool beta__tool_0"
    assert check_generation({**good, "target_tools": ["alpha__tool_0"]}, plan, CATALOGUE)[1] == \
        "wrong number of target tools"
    assert check_generation({**good, "target_tools": ["alpha__tool_0"] * 2}, plan, CATALOGUE)[1] == \
        "wrong number of target tools"
    assert check_generation({**good, "question": "Please run tool_1 on Paris"}, plan, CATALOGUE)[1] == \
        "question names a tool or server"
    multi = Plan(index=1, strategy=Strategy.MULTI_RANDOM, servers=["alpha", "gamma"], num_tools=2)
    assert check_generation({**good, "target_tools": ["alpha__tool_0", "alpha__tool_1"]}, multi, CATALOGUE)[1] == \
        "targets do not span every server"


def test_dedup_finds_exact_and_near_duplicates_and_keeps_distinct_questions() -> None:
    tasks = [
        {"id": "1", "question": "What will the weather be in Paris tomorrow morning for my run?"},
        {"id": "2", "question": "what will the WEATHER be in Paris tomorrow morning, for my run"},  # exact (normalized)
        {"id": "3", "question": "What will the weather be in Paris tomorrow morning for my long run?"},  # near
        {"id": "4", "question": "How many moves does the shortest chess mate take from this position?"},
        {"id": "5", "question": "Convert 3 cups of flour into grams for a bread recipe I am baking."},
    ]
    assert normalized(tasks[0]["question"]) == normalized(tasks[1]["question"])
    result = dedup_minhash(tasks, threshold=0.6)
    assert result.exact == {"2": "1"} and result.near == {"3": "1"}
    assert [task["id"] for task in result.kept] == ["1", "4", "5"]
    # A threshold of 1 keeps the near duplicate; nothing distinct is ever merged.
    assert [task["id"] for task in dedup_minhash(tasks, threshold=1.0).kept] == ["1", "3", "4", "5"]
    with pytest.raises(RunnerError, match=r"threshold must be in \(0, 1\]"):
        dedup_minhash(tasks, threshold=0)


def _judged(**scores: int) -> dict[str, Any]:
    task = {name: {"reasoning": "r", "score": value} for name, value in scores.items()
            if name not in ("completeness", "conciseness")}
    response = {name: {"reasoning": "r", "score": value} for name, value in scores.items()
                if name in ("completeness", "conciseness")}
    return {"question_quality_assessment": {**task, "judge": {"model": "m", "prompt_version": "v"}},
            "response_quality_assessment": {**response, "judge": {"model": "m", "prompt_version": "v"}},
            "checks": {"passed": True, "target_tool_share": 1.0}}


def test_filters_presets_and_expressions_and_missing_scores_fail() -> None:
    sft = compile_filter("sft")
    perfect = _judged(question_quality=5, scenario_realism=5, completeness=4, conciseness=5)
    assert passes(perfect, sft) == (True, None)
    assert passes(_judged(question_quality=4, scenario_realism=5, completeness=4, conciseness=5), sft)[0] is False
    partial = {**perfect, "checks": {"passed": True, "target_tool_share": 0.5}}
    assert passes(partial, sft)[0] is False
    # A failed judgement has no scores: it never passes, and the reason says what was missing.
    failed = {**perfect, "response_quality_assessment": {"error": "not JSON", "judge": {}}}
    assert passes(failed, sft) == (False, "no completeness")
    assert ratings(failed["response_quality_assessment"]) == {}
    assert passes(perfect, compile_filter("completeness + conciseness >= 9 and mode != 'replay'"))[0] is False
    assert passes({**perfect, "mode": "live"}, compile_filter("completeness + conciseness >= 9 and mode != 'replay'"))[0]
    with pytest.raises(RunnerError, match="filter"):
        compile_filter("question_quality >=")


def test_the_judge_reads_tool_outputs_shortened_to_the_budget() -> None:
    long = "x" * 5000
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "Q?"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function",
                                                                    "function": {"name": "a__b", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": long}, {"role": "assistant", "content": "A."}]
    text = transcript(messages, 300)
    assert "sys" not in text and "[user] Q?" in text and "[assistant calls a__b] {}" in text
    assert "x" * 300 + "… [4700 more characters]" in text and "x" * 301 not in text
    assert shorten("short", 10) == "short"


def test_irrelevance_pairs_a_question_with_another_categorys_tools() -> None:
    from simgate.runner.pipeline.extensions import irrelevance_tasks

    tasks = [{"id": "t1", "question": "Will it rain in Oslo?", "servers": ["alpha"], "target_tools": ["alpha__tool_0"],
              "metadata": {"strategy": "single:random"}}]
    [made] = irrelevance_tasks(tasks, CATALOGUE, seed=3)
    assert made["id"] == "t1-irrelevant" and made["target_tools"] == [] and made["subset_name"] == "irrelevance"
    # alpha is Weather; so is beta: another category is chosen when there is one
    assert made["servers"][0] in {"gamma", "delta"}
    assert made["metadata"]["source_id"] == "t1" and made["metadata"]["extension"] == "irrelevance"
    # A correct irrelevance trajectory answers without calling a tool; one that calls a tool fails.
    irrelevance = compile_filter("irrelevance")
    assert passes({"checks": {"has_final_answer": True, "has_tool_call": False}}, irrelevance)[0]
    assert not passes({"checks": {"has_final_answer": True, "has_tool_call": True}}, irrelevance)[0]
    # A server alone in the catalogue has no other server to pair with: nothing is made up.
    assert irrelevance_tasks(tasks, Catalogue(servers=[_server("alpha", "Weather")])) == []
