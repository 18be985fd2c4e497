"""The Python client's resume bookkeeping (sfu_client.resume): table-driven, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from sfu_client.resume import ResumeState

GRANT = {"type": "joined", "resumeToken": "tok", "resumeWindow": 15}


@pytest.mark.parametrize(
    ("reply", "token", "window", "possible"),
    [
        (GRANT, "tok", 15.0, True),
        ({"resumeToken": "tok", "resumeWindow": 0.5}, "tok", 0.5, True),
        ({}, None, 0.0, False),  # a server with resume off
        ({"resumeToken": "", "resumeWindow": 15}, None, 15.0, False),
        ({"resumeToken": 7, "resumeWindow": 15}, None, 15.0, False),
        ({"resumeToken": "tok", "resumeWindow": "15"}, "tok", 0.0, False),
        ({"resumeToken": "tok", "resumeWindow": 0}, "tok", 0.0, False),
    ],
)
def test_grant(reply: dict[str, Any], token: str | None, window: float, possible: bool) -> None:
    state = ResumeState()
    state.granted(reply)
    assert (state.token, state.window, state.possible) == (token, window, possible)


@pytest.mark.parametrize(
    ("seqs", "handled", "last"),
    [
        ([1, 2, 3], [True, True, True], 3),
        ([1, 2, 2, 3], [True, True, False, True], 3),  # a replay overlapping what arrived
        ([5, 4], [True, False], 5),
        ([None, 1, None], [True, True, True], 1),  # messages before joined carry none
        ([True], [True], 0),  # not an integer
        (["3"], [True], 0),
    ],
)
def test_seq(seqs: list[Any], handled: list[bool], last: int) -> None:
    state = ResumeState()
    got = [state.received({} if seq is None else {"seq": seq}) for seq in seqs]
    assert (got, state.last_seq) == (handled, last)


@pytest.mark.parametrize(
    ("sent", "read", "again", "total_after"),
    [
        (["a", "b", "c"], 3, [], 3),
        (["a", "b", "c"], 1, ["b", "c"], 1),
        (["a", "b", "c"], 0, ["a", "b", "c"], 0),
        (["a", "b", "c"], 4, None, 3),  # the server read more than was sent: nonsense
        ([str(n) for n in range(6)], 1, None, 6),  # keep=4: "1" is no longer kept
        ([str(n) for n in range(6)], 2, ["2", "3", "4", "5"], 2),
    ],
)
def test_send_again(sent: list[str], read: int, again: list[str] | None, total_after: int) -> None:
    state = ResumeState(keep=4)
    for text in sent:
        state.sent(text)
    assert state.to_send_again(read) == again
    # what is sent again is recorded again: a second drop right after counts it once
    for text in again or []:
        state.sent(text)
    assert state.to_send_again(total_after + len(again or [])) == []


def test_resume_message() -> None:
    state = ResumeState()
    with pytest.raises(ValueError, match="no resume token"):
        state.message()
    state.granted(GRANT)
    state.received({"seq": 9})
    assert state.message() == {"type": "resume", "v": 1, "token": "tok", "lastSeq": 9}
