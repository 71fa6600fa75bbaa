"""The operator CLI: `sync-keys`, `keys get RAW_KEY`, `keys count` (real MariaDB, moto DynamoDB)."""

from __future__ import annotations

import json

import pytest

from chalicelib.contract.keys_item import hash_key
from chalicelib.keysync import job as keysync_job
from chalicelib.runtime.config import settings
from chalicelib.runtime.observability import metrics
from edgectl.cli import main

INSERT_KEYS = "INSERT INTO project_api_keys (id, project_id, `key`) VALUES (%s, %s, %s)"


@pytest.fixture
def source(aws, lookout_db, monkeypatch):
    monkeypatch.setenv("LOOKOUT_DB_URL", lookout_db.url)
    settings.cache_clear()
    return lookout_db


def bulk(source, count: int) -> None:
    source.execute("INSERT INTO organizations (id) VALUES (1)")
    source.execute("INSERT INTO projects (id, organization_id) VALUES (1, 1)")
    source.executemany(INSERT_KEYS, [(i, 1, f"cli-key-{i}") for i in range(1, count + 1)])


def summary_counts(out: str) -> dict[str, int]:
    """The `label  value` lines of the printed summary."""
    counts = {}
    for line in out.splitlines():
        label, _, value = line.strip().rpartition(" ")
        if value.isdigit():
            counts[label.strip()] = int(value)
    return counts


def test_sync_keys_prints_the_summary_and_keeps_stdout_clean(source, capsys):
    raw = source.insert_key(key_id=1)
    source.insert_key(key_id=2, project_id=2, organization_id=2, ip_allowlist="{broken")
    assert main(["sync-keys"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("key sync finished in ")
    assert summary_counts(out) == {
        "source rows": 2,
        "written": 1,
        "unchanged": 0,
        "deleted": 0,
        "skipped": 1,
        "table before": 0,
    }
    assert "key sync skipped a row" in err  # logs go to stderr
    assert '"key_id":"2"' in err.replace(" ", "")
    assert raw not in out + err
    assert metrics(keysync_job.SERVICE).provider.metric_set == {}  # nothing left for a later EMF flush


def test_sync_keys_db_url_option_wins_over_the_environment(source, monkeypatch, capsys):
    source.insert_key(key_id=1)
    monkeypatch.setenv("LOOKOUT_DB_URL", "mysql://root:@127.0.0.1:1/nowhere")
    settings.cache_clear()
    assert main(["sync-keys", "--db-url", source.url]) == 0
    assert summary_counts(capsys.readouterr().out)["written"] == 1


def test_sync_keys_reports_progress_on_long_syncs(source, monkeypatch, capsys):
    bulk(source, 250)
    monkeypatch.setattr(keysync_job, "PROGRESS_EVERY", 100)
    assert main(["sync-keys"]) == 0
    err = capsys.readouterr().err
    assert "... 100 rows read: 100 written, 0 unchanged, 0 skipped" in err
    assert "... 200 rows read: 200 written" in err


def test_sync_keys_fails_with_exit_1_when_the_database_is_down(aws, monkeypatch, capsys):
    monkeypatch.setenv("LOOKOUT_DB_URL", "mysql://root:cli-secret@127.0.0.1:1/lookout")
    settings.cache_clear()
    assert main(["sync-keys"]) == 1
    out, err = capsys.readouterr()
    assert "key sync FAILED" in out
    assert "error: MySQL error 2003 at 127.0.0.1:1" in err
    assert "cli-secret" not in out + err


def test_sync_keys_without_any_database_setting_says_which_variable(aws, capsys):
    assert main(["sync-keys"]) == 1
    assert "LOOKOUT_DB_URL or LOOKOUT_DB_URL_PARAM must be set" in capsys.readouterr().err


def test_mass_delete_needs_the_flag(source, capsys):
    bulk(source, 100)
    assert main(["sync-keys"]) == 0
    source.execute("UPDATE project_api_keys SET revoked_at = NOW() WHERE id <= 20")
    capsys.readouterr()

    assert main(["sync-keys"]) == 3
    out, err = capsys.readouterr()
    assert summary_counts(out)["deleted"] == 0
    assert "refused to delete 20 of 100 keys (20%), over the 10% limit" in err
    assert "--allow-mass-delete" in err

    assert main(["sync-keys", "--allow-mass-delete"]) == 0
    assert summary_counts(capsys.readouterr().out)["deleted"] == 20
    assert main(["keys", "count"]) == 0
    assert capsys.readouterr().out == "80\n"


def test_empty_source_is_refused_with_exit_3(source, capsys):
    source.insert_key(key_id=1)
    main(["sync-keys"])
    source.execute("UPDATE project_api_keys SET revoked_at = NOW()")
    capsys.readouterr()
    assert main(["sync-keys", "--allow-mass-delete"]) == 3
    assert "the key query returned no rows" in capsys.readouterr().err


def test_keys_get_shows_the_stored_item(source, capsys):
    raw = source.insert_key(key_id=5, project_id=6, organization_id=7, rate_limit_per_minute=120)
    main(["sync-keys"])
    capsys.readouterr()
    assert main(["keys", "get", raw]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["synced_at"] > 0
    assert {k: v for k, v in shown.items() if k not in ("synced_at", "content_hash")} == {
        "key_hash": hash_key(raw),
        "key_id": "5",
        "project_id": "6",
        "organization_id": "7",
        "billing_ok": True,
        "ip_allowlist": [],
        "trace_enabled": True,
        "rum_enabled": True,
        "rate_limit_per_minute": 120,
    }


def test_keys_get_of_an_unknown_key_exits_1(aws, capsys):
    assert main(["keys", "get", "lk_not_there"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"no item for this key (key_hash {hash_key('lk_not_there')})" in err
    assert "lk_not_there" not in err.replace(hash_key("lk_not_there"), "")


def test_keys_count_counts_every_item(aws, put_key, capsys):
    assert main(["keys", "count"]) == 0
    assert capsys.readouterr().out == "0\n"
    for number in range(3):
        put_key(f"raw-{number}")
    assert main(["keys", "count"]) == 0
    assert capsys.readouterr().out == "3\n"


def test_keys_needs_an_action(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["keys"])
    assert caught.value.code == 2
