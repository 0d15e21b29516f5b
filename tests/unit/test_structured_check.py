"""The validator of structured answers and tool calls (engines/structured.py): what is never a success."""

from __future__ import annotations

import pytest

from genforge.engines.params import ResponseFormat, TextSettings, ToolFunction
from genforge.engines.structured import check_output, check_request, grammar, parse_tool_calls
from genforge.errors import InvalidRequest, OffSchema

SCHEMA = {
    "type": "object",
    "required": ["n", "tag"],
    "additionalProperties": False,
    "properties": {"n": {"type": "integer", "maximum": 3}, "tag": {"enum": ["a", "b"]}},
}
WEATHER = ToolFunction(
    name="get_weather",
    parameters={"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}},
)


def settings(**kw) -> TextSettings:
    return TextSettings(max_tokens=50, temperature=0, top_p=1, seed=1, **kw)


JSON = settings(response_format=ResponseFormat(type="json_schema", json_schema=SCHEMA))
TOOLS = settings(tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)


def test_a_matching_answer_passes():
    check_output('{"n":2,"tag":"a"}', "stop", JSON)


@pytest.mark.parametrize(
    ("text", "finish", "says"),
    [
        ('{"n":2,"ta', "length", "cut at max_tokens 50"),
        ('{"n":2,"tag":"a"', "stop", "not JSON"),
        ('{"n":9,"tag":"a"}', "stop", "at n: 9 is greater than the maximum of 3"),
        ('{"n":1,"tag":"c"}', "stop", "at tag"),
        ('{"n":1}', "stop", "'tag' is a required property"),
    ],
)
def test_cut_unparsable_or_off_schema_answers_are_off_schema_naming_the_first_error(text, finish, says):
    with pytest.raises(OffSchema) as err:
        check_output(text, finish, JSON)
    assert err.value.code == "invalid_output" and says in err.value.message


def test_tool_calls_are_parsed_and_checked():
    calls = parse_tool_calls('<tool_call>{"name":"get_weather","arguments":{"city":"Oslo"}}</tool_call>', TOOLS)
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Oslo"})]
    for text, says in [
        ('<tool_call>{"name":"rm_rf","arguments":{}}</tool_call>', "'rm_rf', which is not a function"),
        ('<tool_call>{"name":"get_weather","arguments":{"city":3}}</tool_call>', "do not match its parameters"),
        ("It is sunny.", "asked for a call; the answer has none"),
        ('Sure. <tool_call>{"name":"get_weather","arguments":{"city":"x"}}</tool_call>', "the answer has none"),
        ('<tool_call>{"name":"get_weather","arguments":{"city":"x"}}</tool_call>\n' * 2, "parallel_tool_calls is"),
    ]:
        with pytest.raises(OffSchema) as err:
            check_output(text, "stop", TOOLS)
        assert says in err.value.message, err.value.message


@pytest.mark.parametrize(
    ("params", "says"),
    [
        (
            settings(response_format=ResponseFormat(type="json_schema", json_schema={"uniqueItems": True})),
            "uniqueItems",
        ),
        (settings(tools=[WEATHER], tool_choice="get_time"), "'get_time'"),
        (settings(tool_choice="required"), "needs tools"),
        (settings(tools=[WEATHER, WEATHER]), "same name"),
    ],
)
def test_requests_the_grammar_cannot_honour_are_refused(params, says):
    with pytest.raises(InvalidRequest) as err:
        check_request(params)
    assert says in err.value.message


def test_free_text_has_no_grammar_and_tool_choice_none_frees_it():
    assert grammar(settings()) is None
    assert grammar(settings(tools=[WEATHER], tool_choice="none")) is None
    assert grammar(TOOLS) is not None and grammar(JSON) is not None
