"""The text validator: the last line of honesty before anything is stored as a success."""

from __future__ import annotations

import pytest

from conftest import engine_output, validate_output
from genforge.errors import InvalidOutput

PARAMS = {"max_tokens": 16, "temperature": 0.6, "top_p": 0.9, "seed": 1, "stop": []}


def validate(content_type: str, out) -> None:
    validate_output(content_type, out, PARAMS, "Name three colours.")


def test_real_text_passes():
    validate("text", engine_output("Red, green and blue.", finish="stop"))
    validate("text", engine_output("A story cut short by max_tokens", finish="length"))


def test_special_tokens_around_real_words_still_pass():
    validate("text", engine_output("<|im_start|>Paris<|im_end|>"))


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\n\t  \r\n",
        "<|im_end|>",
        " <|im_end|>\n<|endoftext|> ",
        "<|im_start|><|im_end|>",
        "</s>",
        "<s></s>",
        "<end_of_turn>\n",
        "[INST][/INST]",
        "<pad><unk>",
    ],
)
def test_empty_or_only_special_tokens_is_invalid_output(text):
    with pytest.raises(InvalidOutput) as info:
        validate("text", engine_output(text, completion_tokens=3))
    assert info.value.code == "invalid_output"
    assert "no text" in info.value.message


@pytest.mark.parametrize("data", [b"\xff\xfe\xfa", b"caf\xe9", b"valid start \xc3"])
def test_bytes_that_are_not_utf8_are_invalid_output(data):
    with pytest.raises(InvalidOutput) as info:
        validate("text", engine_output("looks fine", data=data))
    assert "UTF-8" in info.value.message


def test_artifact_bytes_must_be_the_text():
    with pytest.raises(InvalidOutput, match="differ"):
        validate("text", engine_output("the text", data=b"other bytes"))


def test_unknown_finish_reason_is_invalid_output():
    with pytest.raises(InvalidOutput, match="finish reason"):
        validate("text", engine_output("some words", finish="eos"))


def test_no_generated_tokens_is_invalid_output():
    with pytest.raises(InvalidOutput, match="no generated tokens"):
        validate("text", engine_output("some words", completion_tokens=0))
