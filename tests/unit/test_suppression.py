"""Suppression rules as code: validation that names the key, matching, expiry, hot reload, the CLI."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from schemas.errors import ConfigError
from streams.cli import main
from streams.suppression import Suppressor, load, parse
from tests.unit.storage_contract import sample_alerts

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
RULES = """
version: 1
rules:
  - id: burst-k1
    match: {detector: "api.rate_*", tenant: acme, entity: k1, evidence: {rate: {min: 10, max: 12}}}
    reason: load test
    author: ana
    expires: 2026-12-08T00:00:00Z
  - id: old
    match: {entity: "k*"}
    reason: expired long ago
    author: bo
    expires: 2026-01-01T00:00:00Z
"""


def test_rules_match_detector_tenant_entity_globs_and_evidence_until_they_expire():
    rules = parse(RULES)
    a1, a2, a3 = sample_alerts()  # k1 api.rate_burst rate 11; k1 api.new_client; k2 api.rate_burst rate 13
    assert rules.match(a1, NOW) == "burst-k1"
    assert rules.match(a2, NOW) is None  # another detector
    assert rules.match(a3, NOW) is None  # another entity (and rate 13 is out of range)
    assert rules.match(a1, datetime(2026, 12, 8, tzinfo=UTC)) is None  # expired
    a1.evidence.features[0].value = 12.5
    assert rules.match(a1, NOW) is None  # the evidence is out of range


@pytest.mark.parametrize(("text", "key"), [
    ("version: 2\nrules: []", "version"),
    ("rules:\n  - {id: a, match: {entity: x}, reason: r, author: a}", "rules[0].expires"),
    ("rules:\n  - {id: a, match: {entity: x}, reason: r, author: a, expires: 2026-12-08T00:00:00}",
     "rules[0].expires"),  # no offset
    ("rules:\n  - {id: a, match: {detectr: x}, reason: r, author: a, expires: 2026-12-08T00:00:00Z}",
     "rules[0].match.detectr"),
    ("rules:\n  - {id: a, match: {}, reason: r, author: a, expires: 2026-12-08T00:00:00Z}", "rules[0].match"),
    ("rules:\n  - {id: 'a b', match: {entity: x}, reason: r, author: a, expires: 2026-12-08T00:00:00Z}",
     "rules[0].id"),
    ("rules:\n  - {id: a, match: {entity: x, evidence: {rows: {max: big}}}, reason: r, author: a, "
     "expires: 2026-12-08T00:00:00Z}", "rules[0].match.evidence.rows"),
    ("rules:\n  - {id: a, match: {entity: x}, reason: '', author: a, expires: 2026-12-08T00:00:00Z}",
     "rules[0].reason"),
    ("rules: [1, 2", "not YAML"),
    ("- just a list", "(top level)"),
])
def test_a_bad_file_is_refused_with_the_key_named(text: str, key: str):
    with pytest.raises(ConfigError) as err:
        parse(text, "s.yaml")
    assert str(err.value).startswith("s.yaml: ") and key in str(err.value)


def test_duplicate_ids_are_refused():
    one = "  - {id: a, match: {entity: x}, reason: r, author: a, expires: 2026-12-08T00:00:00Z}\n"
    with pytest.raises(ConfigError, match="used twice"):
        parse("rules:\n" + one + one)


def test_the_suppressor_reloads_a_changed_file_and_keeps_its_rules_when_the_new_one_is_bad(tmp_path):
    path = tmp_path / "s.yaml"
    t = [0.0]
    sup = Suppressor(path, check_s=1.0, clock=lambda: t[0])
    a1 = sample_alerts()[0]
    assert sup.match(a1, NOW) is None  # no file: no rules
    path.write_text(RULES)
    assert not sup.refresh()  # checked less than a second ago
    t[0] = 1.5
    assert sup.refresh() and sup.match(a1, NOW) == "burst-k1"
    path.write_text("rules: [oops")
    os.utime(path, ns=(1, 1))
    t[0] = 3.0
    assert not sup.refresh()
    assert sup.match(a1, NOW) == "burst-k1"  # the bad file did not take the rules away
    assert sup.reloads == 2


def test_the_cli_adds_lists_and_expires_rules(tmp_path, monkeypatch, capsys):
    path = tmp_path / "rules" / "s.yaml"
    monkeypatch.setenv("SPYGLASS_SUPPRESSIONS_FILE", str(path))
    assert main(["suppress", "add", "--detector", "data.volume_spike", "--entity", "svc-*", "--evidence",
                 "rows<=2000000", "--evidence", "rows>=10", "--reason", "nightly export", "--expires", "7d",
                 "--by", "ana"]) == 0
    assert main(["suppress", "add", "--tenant", "acme", "--reason", "r", "--expires", "2030-01-01T00:00:00Z"]) == 0
    rules = load(path)
    assert [r.id for r in rules.rules] == ["sup-1", "sup-2"]
    assert rules.rules[0].match.evidence["rows"].min == 10 and rules.rules[0].author == "ana"
    assert main(["suppress", "add", "--reason", "everything", "--expires", "1d"]) == 1  # matches every alert
    assert "names none of detector, tenant, entity" in capsys.readouterr().err
    assert main(["suppress", "expire", "sup-1"]) == 0
    assert not load(path).rules[0].live(datetime.now(UTC)) and load(path).rules[1].live(datetime.now(UTC))
    capsys.readouterr()
    assert main(["suppress", "list"]) == 0
    out = capsys.readouterr().out
    assert "sup-2" in out and "sup-1" not in out
    assert main(["suppress", "list", "--all"]) == 0 and "expired" in capsys.readouterr().out
    assert main(["suppress", "expire", "nope"]) == 1


def test_a_false_positive_mark_can_add_a_suppression_rule_for_its_pattern(tmp_path, monkeypatch, capsys):
    from schemas.rows import alert_columns
    from streams.settings import StoreURL
    from streams.sinks.clickhouse import ChdbStore, apply_ddl
    from tests.unit.storage_contract import CREATED

    url = f"chdb://{tmp_path / 'store'}"
    s = ChdbStore(StoreURL.parse(url))
    try:
        apply_ddl(s)
        s.insert("alerts", alert_columns(sample_alerts()[:1], CREATED, [("not-an-event-topic", 0, 1)]))
    finally:
        s.close()
    monkeypatch.setenv("SPYGLASS_CLICKHOUSE_URL", url)
    monkeypatch.setenv("SPYGLASS_SUPPRESSIONS_FILE", str(tmp_path / "s.yaml"))
    assert main(["alerts", "set-status", "alert-1", "resolved", "--suppress", "7d"]) == 1  # only with false_positive
    assert main(["alerts", "set-status", "alert-1", "false_positive", "--note", "load test", "--by", "ana",
                 "--suppress", "7d"]) == 0
    out = capsys.readouterr().out
    assert "not sent to an engine" in out and "suppression rule fp-alert-1" in out
    [rule] = load(tmp_path / "s.yaml").rules
    m = rule.match
    assert (m.detector, m.tenant, m.entity, rule.reason, rule.author) == ("api.rate_burst", "acme", "k1", "load test",
                                                                          "ana")
    assert rule.match.matches(sample_alerts()[0]) and not rule.match.matches(sample_alerts()[2])
