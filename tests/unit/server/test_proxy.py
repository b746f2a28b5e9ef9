"""The proxy's choice of enforcement level, and its settings (the HTTP behaviour is tested against
real upstreams in test_proxy_integration.py and test_proxy_full_integration.py)."""

import pytest
from pydantic import ValidationError

from server.upstream.probe import choose_level
from server.settings import ProxySettings


@pytest.mark.parametrize("plugin, tokenizer, level", [
    (True, "tok", "full"), (False, "tok", "bias"), (True, None, "filter"), (False, None, "filter"),
])
def test_auto_takes_the_strongest_level_the_upstream_allows(plugin, tokenizer, level):
    assert choose_level("auto", plugin, tokenizer) == level


@pytest.mark.parametrize("requested, plugin, tokenizer, message", [
    ("full", False, "tok", "does not run the guard's logits processor"),
    ("full", True, None, "--tokenizer"),
    ("bias", True, None, "--tokenizer"),
])
def test_a_level_the_upstream_cannot_give_stops_the_start(requested, plugin, tokenizer, message):
    with pytest.raises(RuntimeError, match=message):
        choose_level(requested, plugin, tokenizer)


def test_a_weaker_level_can_be_asked_for():
    assert choose_level("filter", True, "tok") == "filter"
    assert choose_level("bias", True, "tok") == "bias"


@pytest.mark.parametrize("field, value", [("upstream", "ftp://x"), ("upstream", "http://a/v1,ftp://b"),
                                          ("upstream", "http://a/v1,http://a/v1/"), ("upstream", ","),
                                          ("enforcement", "strict"),
                                          ("upstream_timeout", 0), ("max_logit_bias", 0)])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        ProxySettings(**{"upstream": "http://x/v1", field: value})


def test_several_upstreams_comma_separated():
    assert ProxySettings(upstream=" http://a:8000/v1/, http://b:8000/v1").upstream == "http://a:8000/v1,http://b:8000/v1"
