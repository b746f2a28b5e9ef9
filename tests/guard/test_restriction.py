from guard.policy import parse_policy
from guard.restriction import UNRESTRICTED, Restrictions
from tests.conftest import UNSEEN_POLICY

POLICY = parse_policy(UNSEEN_POLICY)


def test_without_a_classifier_every_target_applies():
    restriction = Restrictions(POLICY, 8.0).for_conversation(["What is the capital of France?"])
    assert restriction.target_ids == ("einstein", "lord-of-the-rings")
    assert "jrrtolkien" in restriction.spec.patterns


def test_detected_target_gets_its_phrases_and_spans(unseen_classifier):
    restrictions = Restrictions(POLICY, 8.0, unseen_classifier)
    restriction = restrictions.for_conversation(["Where was the father of relativity born?"] * 2)
    assert restriction.target_ids == ("einstein",)
    patterns = set(restriction.spec.patterns)
    assert {"alberteinstein", "einstein", "ulm", "germany", "1879"} <= patterns  # phrases + spans
    assert "tolkien" not in patterns  # only the detected target
    assert 4.0 <= restriction.spec.penalty <= 8.0  # grows with confidence
    assert restriction.detector.violations("He was born in Ulm.")


def test_unrelated_conversation_takes_the_plain_path(unseen_classifier):
    restrictions = Restrictions(POLICY, 8.0, unseen_classifier)
    assert restrictions.for_conversation(["What is the capital of Japan?"] * 2) is UNRESTRICTED


def test_empty_policy_restricts_nothing():
    assert Restrictions(parse_policy({}), 8.0).for_conversation(["anything"]) is UNRESTRICTED


def test_a_restriction_names_the_policy_version_it_came_from():
    """So the audit log records the version a request was classified by, even if a newer one is
    swapped in before the answer ends."""
    restriction = Restrictions(POLICY, 8.0, version=7).for_conversation(["Who developed relativity?"])
    assert restriction.policy_version == 7
    assert Restrictions(POLICY, 8.0, version=8).for_conversation(["Who developed relativity?"]).policy_version == 8
