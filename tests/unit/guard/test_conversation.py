import pytest

from guard.conversation import Conversation

FOLLOW_UP = Conversation.of([("system", "You are a helpful assistant."), ("user", "Who wrote The Hobbit?"),
                             ("assistant", "J.R.R. Tolkien wrote it."), ("user", "Remind me, what was his surname?")])


def test_a_prompt_is_one_user_turn():
    conversation = Conversation.of_prompt("Who wrote it?")
    assert conversation.views == ["Who wrote it?"] and conversation.asked == conversation.said == "Who wrote it?"


def test_views_are_the_asked_turns_then_each_user_turn_the_last_one_last():
    assert FOLLOW_UP.views == ["You are a helpful assistant.\nWho wrote The Hobbit?\nRemind me, what was his surname?",
                               "Who wrote The Hobbit?", "Remind me, what was his surname?"]
    assert FOLLOW_UP.last_user == "Remind me, what was his surname?"


def test_what_was_said_includes_the_assistants_turns_and_what_was_asked_does_not():
    assert "Tolkien" in FOLLOW_UP.said and "Tolkien" not in FOLLOW_UP.asked


@pytest.mark.parametrize("turns", [[], [("system", "Be brief.")], [("assistant", "Hello!")]])
def test_a_conversation_without_a_user_turn_has_one_view(turns):
    conversation = Conversation.of(turns)
    assert conversation.last_user == "" and conversation.views[-1] == ""


def test_only_the_last_few_user_turns_are_views_of_their_own():
    conversation = Conversation.of([("user", f"question {i}") for i in range(10)])
    assert conversation.views[1:] == ["question 7", "question 8", "question 9"]
