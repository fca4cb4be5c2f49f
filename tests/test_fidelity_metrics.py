"""Call-level fidelity metrics on hand-built pairs with known answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from simgate.simulators.fidelity import call_metrics as m
from simgate.simulators.fidelity.scoring import aggregate, score_call


def result(structured: Any = None, *, text: str | None = None, is_error: bool = False) -> dict[str, Any]:
    body = text if text is not None else json.dumps(structured)
    out: dict[str, Any] = {"content": [{"type": "text", "text": body}], "isError": is_error}
    if structured is not None:
        out["structuredContent"] = structured
    return out


SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                                            "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["id", "name"]}
LIVE = result({"id": 7, "name": "Ada", "tags": ["x", "y"]})


def test_identical_answers_score_perfectly() -> None:
    same = result({"id": 7, "name": "Ada", "tags": ["x", "y"]})
    assert m.schema_validity(same, SCHEMA) == (True, None)
    assert m.outcome_class(same) == "success"
    assert m.path_jaccard(LIVE, same) == 1.0 and m.type_agreement(LIVE, same) == 1.0
    assert m.value_fidelity(LIVE, same) == 1.0
    assert m.bleu4(LIVE, same) == pytest.approx(100.0)


def test_reordered_keys_change_nothing() -> None:
    reordered = {"content": [{"type": "text", "text": '{"tags": ["x", "y"], "name": "Ada", "id": 7}'}],
                 "structuredContent": {"tags": ["x", "y"], "name": "Ada", "id": 7}, "isError": False}
    assert m.path_jaccard(LIVE, reordered) == 1.0
    assert m.value_fidelity(LIVE, reordered) == 1.0
    assert m.bleu4(LIVE, reordered) == pytest.approx(100.0)  # BLEU on the canonical JSON, not the raw text
    # Text-only answers: JSON parsed from the text is the payload.
    assert m.path_jaccard(result(text='{"a": 1, "b": [1, 2]}'), result(text='{"b": [3], "a": 2}')) == 1.0


def test_type_changed() -> None:
    changed = result({"id": "7", "name": "Ada", "tags": ["x", "y"]})
    assert m.schema_validity(changed, SCHEMA)[0] is False
    assert "id" in (m.schema_validity(changed, SCHEMA)[1] or "")
    assert m.path_jaccard(LIVE, changed) == 1.0  # same paths...
    assert m.type_agreement(LIVE, changed) == pytest.approx(3 / 4)  # ...one of 4 (id, name, tags, tags[*]) differs
    assert m.value_fidelity(LIVE, changed) == pytest.approx(3 / 4)  # "7" is not 7


def test_missing_and_extra_paths() -> None:
    fewer = result({"id": 7, "name": "Ada"})
    # paths: $, $.id, $.name, $.tags, $.tags[*]  vs  $, $.id, $.name
    assert m.path_jaccard(LIVE, fewer) == pytest.approx(3 / 5)
    assert m.value_fidelity(LIVE, fewer) == pytest.approx(2 / 4)
    assert m.path_jaccard(result(text="plain"), result(text="other")) is None  # no structured data: n/a
    assert m.path_jaccard(LIVE, result(text="plain")) == 0.0


def test_error_versus_success() -> None:
    error = result(text="Error: record 7 not found", is_error=True)
    assert m.outcome_class(error) == "not_found_or_invalid"
    assert m.schema_validity(error, SCHEMA) == (True, None)  # a failed call needs no structuredContent
    assert m.outcome_class(result(text="boom: the disk is on fire", is_error=True)) == "error"
    assert m.outcome_class({"error": {"code": -32603, "message": "internal"}}) == "error"
    assert m.outcome_class({"code": -32602, "message": "bad params"}) == "not_found_or_invalid"
    assert m.outcome_class({"error": {"code": -32006, "message": "slow down"}}) == "rate_limit"
    assert m.outcome_class(result(text="HTTP 429 Too Many Requests", is_error=True)) == "rate_limit"
    assert m.outcome_class(None) == "simulator_failure"  # no answer at all
    assert m.schema_validity(None, SCHEMA) == (False, "no answer")
    assert m.schema_validity(result(text="ok"), SCHEMA)[0] is False  # success without structuredContent
    assert m.schema_validity({"content": "not a list"}, None)[0] is False  # not a CallToolResult
    assert m.bleu4(LIVE, error) < 5


def test_soft_errors_count_as_errors() -> None:
    assert m.outcome_class(result(text="Database error: no such table: nope")) == "not_found_or_invalid"
    assert m.outcome_class(result(text="sqlite3.OperationalError: near 'x': syntax error")) == "error"
    assert m.outcome_class(result(text='{"error": "permission denied"}')) == "error"
    assert m.is_soft_error(result(text="The error rate is 5%")) is False
    assert m.outcome_class(result(text="The error rate is 5%")) == "success"


def test_empty_outcomes() -> None:
    assert m.outcome_class(result({"entities": [], "relations": []})) == "empty"
    assert m.outcome_class(result(text="[]")) == "empty"
    assert m.outcome_class(result(text="No results found.")) == "empty"
    assert m.outcome_class({"content": [], "isError": False}) == "empty"
    assert m.outcome_class(result({"count": 0, "items": [1]})) == "success"


def test_numbers_within_and_outside_ten_percent() -> None:
    live, again = result({"price": 100.0, "name": "x"}), result({"price": 100.0, "name": "x"})
    assert m.value_fidelity(live, result({"price": 109.0, "name": "x"})) == 1.0
    assert m.value_fidelity(live, result({"price": 111.0, "name": "x"})) == 0.5
    assert m.values_agree(0, 0) and not m.values_agree(1, True) and not m.values_agree("a", "A")
    # Only paths two live calls agree on are judged: a clock that moved is not held against S.
    moved = result({"price": 100.0, "name": "y"})
    assert m.stable_paths(live, moved) == {"$.price"}
    assert m.value_fidelity(live, result({"price": 104.0, "name": "zzz"}), m.stable_paths(live, moved)) == 1.0
    assert m.stable_paths(live, again) == {"$.price", "$.name"}


def test_cohen_kappa_known_values() -> None:
    # Wikipedia's example: 50 items, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o 0.7, p_e 0.5, κ 0.4.
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    assert m.cohen_kappa(pairs) == pytest.approx(0.4)
    assert m.cohen_kappa([("a", "a"), ("b", "b"), ("c", "c")]) == pytest.approx(1.0)
    assert m.cohen_kappa([("a", "b"), ("b", "a")]) == pytest.approx(-1.0)
    assert m.cohen_kappa([("s", "s")] * 3 + [("e", "s")]) == pytest.approx(0.0)  # a constant rater: chance
    assert m.cohen_kappa([]) is None


def test_bleu_identical_and_disjoint() -> None:
    text = "The quick brown fox jumps over the lazy dog near the river bank today"
    assert m.bleu4(result(text=text), result(text=text)) == pytest.approx(100.0)
    assert m.bleu4(result(text=text), result(text="zebra quantum violet mango saxophone")) < 1.0
    assert m.bleu4(result(text=""), result(text="")) == 100.0


def test_score_and_aggregate_with_a_noise_floor() -> None:
    live = result({"n": 10, "at": "12:00:01"})
    again = result({"n": 10, "at": "12:00:02"})
    sim = result({"n": 10.5, "at": "09:00"})
    schema = {"type": "object", "properties": {"n": {"type": "number"}, "at": {"type": "string"}}}
    score = score_call(server="s", tool="t", key="k", setting="few_shot", arguments={}, live=live, simulated=sim,
                       output_schema=schema, second_live=again)
    assert score.value_basis == "stable" and score.simulated.value_fidelity == 1.0  # only $.n is judged
    assert score.second_live is not None and score.second_live.value_fidelity == 0.5
    failed = score_call(server="s", tool="t", key="k2", setting="few_shot", arguments={}, live=live, simulated=None,
                        output_schema=schema, second_live=again, simulator_error="no example")
    agg = aggregate([score, failed])
    assert agg.calls == 2 and agg.simulator_failures == 1
    assert agg.simulated.schema_validity == 0.5 and agg.simulated.outcome_agreement == 0.5
    assert agg.live_vs_live is not None and agg.live_vs_live.outcome_agreement == 1.0
    assert agg.ratio is not None and agg.ratio.outcome_agreement == pytest.approx(0.5)
    assert agg.confusion == {"success": {"success": 1, "simulator_failure": 1}}


def test_embedding_cosine_and_its_optional_model() -> None:
    from simgate.simulators.fidelity.embedding import cosine, load_embedder

    assert cosine([1.0, 0.0], [0.0, 1.0]) == 0.0
    assert cosine([0.6, 0.8], [0.6, 0.8]) == pytest.approx(1.0)
    assert cosine([1.0, 0.0], [-1.0, 0.0]) == pytest.approx(-1.0)
    embed, note = load_embedder()
    if embed is None:  # no local model here: the reports say why the metric was skipped
        assert note.startswith("skipped: ")
    else:
        u, v = embed(["the cat sat", "the cat sat"])
        assert cosine(u, v) == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------- known-bad inputs


def test_kappa_on_a_single_class_pair_is_undefined() -> None:
    """Both sides answer 'success' every time: κ is 0/0, reported undefined with the counts, not 1.0."""
    pairs = [("success", "success")] * 4
    assert m.cohen_kappa(pairs) is None
    reason = m.kappa_undefined(pairs)
    assert reason is not None and "undefined" in reason and "success→success: 4" in reason
    assert m.kappa_undefined([("a", "a"), ("b", "b")]) is None  # defined: no reason
    ok = [score_call(server="s", tool="t", key=f"k{i}", setting="few_shot", arguments={}, live=LIVE, simulated=LIVE,
                     output_schema=SCHEMA, second_live=LIVE) for i in range(3)]
    agg = aggregate(ok)
    assert agg.simulated.outcome_agreement == 1.0
    assert agg.simulated.kappa is None and agg.simulated.kappa_undefined is not None
    assert agg.live_vs_live is not None and agg.live_vs_live.kappa is None and agg.live_vs_live.kappa_undefined
    assert agg.confusion == {"success": {"success": 3}} and agg.live_vs_live_confusion == {"success": {"success": 3}}
    assert agg.ratio is not None and agg.ratio.kappa is None  # no ratio of an undefined κ


def test_a_simulator_that_always_fails_scores_zero_outcome_agreement() -> None:
    """No answer is its own outcome: it never agrees with a live error (nor with a live success)."""
    lives = [LIVE, result(text="Error: boom", is_error=True), {"error": {"code": -32603, "message": "internal"}},
             result(text="Traceback (most recent call last):\n  oops")]
    assert [m.outcome_class(x) for x in lives] == ["success", "error", "error", "error"]
    scores = [score_call(server="s", tool="t", key=f"k{i}", setting="zero_shot", arguments={}, live=live,
                         simulated=None, output_schema=None, simulator_error="no example")
              for i, live in enumerate(lives)]
    agg = aggregate(scores)
    assert agg.simulated.outcome_agreement == 0.0 and agg.simulated.schema_validity == 0.0
    assert agg.simulated.kappa is not None and agg.simulated.kappa <= 0.0
    # Through the gateway a failed simulation is a JSON-RPC error with simgate's own code: the same class.
    assert m.outcome_class({"error": {"code": -32005, "message": "the simulator could not answer"}}) == \
        "simulator_failure"
    assert m.outcome_class({"error": {"code": -32004, "message": "no simulator"}}) == "simulator_failure"


def test_type_agreement_counts_only_below_the_root() -> None:
    # Two objects with every field of another type: 0, not the 1/3 the root object would lend them.
    assert m.type_agreement(result({"a": 1, "b": "x"}), result({"a": "1", "b": 2})) == 0.0
    assert m.type_agreement(result({"a": 1}), result([1])) == 0.0  # an object against a list
    assert m.type_agreement(result({"a": 1}), result({"b": 1})) is None  # nothing in common below the root
    assert m.type_agreement(result({"a": 1}), result({"a": 2})) == 1.0


def test_lists_whose_live_order_is_unstable_compare_as_multisets() -> None:
    live = result({"items": [{"id": 1}, {"id": 2}, {"id": 3}], "total": 3})
    again = result({"items": [{"id": 3}, {"id": 1}, {"id": 2}], "total": 3})  # same items, another order
    shuffled = result({"items": [{"id": 2}, {"id": 3}, {"id": 1}], "total": 3})
    wrong = result({"items": [{"id": 2}, {"id": 9}, {"id": 1}], "total": 3})
    assert m.unordered_lists(live, again) == {"$.items"}
    score = score_call(server="s", tool="t", key="k", setting="few_shot", arguments={}, live=live, simulated=shuffled,
                       output_schema=None, second_live=again)
    assert score.unordered_lists == ["$.items"]
    assert score.simulated.value_fidelity == 1.0 and score.second_live is not None
    assert score.second_live.value_fidelity == 1.0  # the floor is not blamed for the order either
    bad = score_call(server="s", tool="t", key="k", setting="few_shot", arguments={}, live=live, simulated=wrong,
                     output_schema=None, second_live=again)
    assert bad.simulated.value_fidelity == pytest.approx(3 / 4)  # id 9 is not among the live items
    # Where two live calls keep the order, order is a difference: a reversed list scores badly.
    steady = score_call(server="s", tool="t", key="k", setting="few_shot", arguments={}, live=live,
                        simulated=result({"items": [{"id": 3}, {"id": 2}, {"id": 1}], "total": 3}),
                        output_schema=None, second_live=live)
    assert steady.unordered_lists == [] and steady.simulated.value_fidelity == pytest.approx(2 / 4)


def test_the_score_keeps_the_answers_it_scored() -> None:
    sim = result({"id": 8, "name": "Bob"})
    error = {"error": {"code": -32603, "message": "internal"}}
    score = score_call(server="s", tool="t", key="k", setting="few_shot", arguments={"id": 7}, live=LIVE,
                       simulated=sim, output_schema=SCHEMA, second_live=error)
    assert score.answers.live == LIVE and score.answers.simulated == sim and score.answers.second_live == error
    failed = score_call(server="s", tool="t", key="k", setting="few_shot", arguments={}, live=LIVE, simulated=None,
                        output_schema=SCHEMA, simulator_error="no example")
    assert failed.answers.simulated is None and failed.answers.live == LIVE
    dumped = json.loads(score.model_dump_json())
    assert dumped["answers"]["simulated"]["structuredContent"] == {"id": 8, "name": "Bob"}
