from pipelines.lib.redact import mask, redact


def test_key_in_a_url_is_redacted_whatever_it_looks_like():
    text = "GET https://query.cometapi.com/user/quota?key=abc123XYZ&start_date=2026-01-01 failed"
    assert redact(text) == "GET https://query.cometapi.com/user/quota?key=***&start_date=2026-01-01 failed"


def test_known_secret_anywhere_and_bearer_headers():
    out = redact("token tok-9f8e7d6c5b4a in text; Authorization: Bearer abc.def-ghi", ["tok-9f8e7d6c5b4a"])
    assert "tok-9f8e7d6c5b4a" not in out and "abc.def-ghi" not in out


def test_sk_shaped_keys_without_a_label():
    assert "sk-live0123456789" not in redact("oops sk-live0123456789 leaked")


def test_mask_keeps_only_the_last_four():
    assert mask("sk-abcdefghijkl1234") == "sk-…1234"
    assert mask("short") == "***"
