"""The README is for an operator: short, every command in it runs as printed (its parser and
options exist), every link stays inside the repository and resolves, its alarms are the stack's,
and its figures are what `python -m edgectl readme` generates from the committed reference."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from edgectl import cmd_cost, cmd_readme
from edgectl.cli import build_parser, main
from edgectl.devstack import DevStack, StackOptions

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TEXT = README.read_text()
LINK = re.compile(r"\]\(([^)\s]+)\)")


def code_lines() -> list[str]:
    """Every command in the README: lines of ```sh blocks (continuations joined) and `inline` commands."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", TEXT, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.split("  #", 1)[0].strip() for line in joined.splitlines() if line.strip()]
    commands += re.findall(r"`((?:\S+=\S+ )*(?:\.venv/bin/)?python -m edgectl [^`]+|make [a-z-]+[^`]*)`", TEXT)
    commands += [f"python -m edgectl {rest}" for rest in re.findall(r"`edgectl ([a-z][^`]*)`", TEXT)]
    return commands


def test_the_readme_is_read_in_five_minutes() -> None:
    assert len(TEXT.splitlines()) <= 200


def test_nothing_points_outside_the_repository() -> None:
    for pattern in (r"\.\./", r"CONTRACT", r"shared/", r"seeds/"):
        assert not re.search(pattern, TEXT), pattern
    for target in LINK.findall(TEXT):
        assert not re.match(r"[a-z]+://", target), f"{target}: the README links only into the repository"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces to -."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("path", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda path: path.name)
def test_every_relative_link_resolves(path: Path) -> None:
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        assert resolved.exists(), f"{path.name}: {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved.read_text()), f"{path.name}: {target}"


def test_every_edgectl_command_parses_as_printed() -> None:
    parser = build_parser()
    found = 0
    for command in code_lines():
        words = shlex.split(command.replace("$(", "").replace(")", ""))
        while words and "=" in words[0]:
            words = words[1:]  # VARIABLE=value prefixes
        if words[:3] not in (["python", "-m", "edgectl"], [".venv/bin/python", "-m", "edgectl"]):
            continue
        found += 1
        try:
            parser.parse_args(words[3:])
        except SystemExit:
            pytest.fail(f"the README's command does not parse: {command}")
    assert found >= 5


def test_every_make_target_exists() -> None:
    targets = set(re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.M))
    used = {match for command in code_lines() for match in re.findall(r"(?:^|\s)make ([a-z-]+)", command)}
    used |= set(re.findall(r"`make ([a-z-]+)", TEXT))
    assert used and used <= targets


def test_the_alarm_table_names_every_alarm_of_the_stack() -> None:
    template = json.loads((ROOT / "infra" / "resources.json").read_text())
    alarms = {name for name, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    section = TEXT.split("## When an alarm fires", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(\w+Alarm)`", section))
    for first, last in re.findall(r"`Sink(\d)FailingAlarm`\u2013`Sink(\d)FailingAlarm`", section):
        named |= {f"Sink{n}FailingAlarm" for n in range(int(first), int(last) + 1)}
    assert named == alarms


def test_the_sample_output_of_make_dev_has_the_lines_it_prints(tmp_path: Path) -> None:
    sample = TEXT.split("Lookout Edge is running locally.", 1)[1].split("```", 1)[0]
    labels = re.findall(r"^  ([A-Z][\w ]+?)  +", sample, re.M)
    banner = DevStack(StackOptions(state_dir=tmp_path, demo_key="lk_x")).banner()
    assert labels and all(f"\n  {label} " in banner for label in labels)


def test_generated_blocks_are_current() -> None:
    assert set(re.findall(r"<!-- generated: ([\w-]+) ", TEXT)) == set(cmd_readme.BLOCKS)
    assert cmd_readme.render(TEXT) == TEXT, "run `python -m edgectl readme`"


def test_a_fresh_clone_prints_the_cost_the_readme_shows(tmp_path: Path, monkeypatch, capsys) -> None:
    """No local bench run: `cost` takes the committed reference, and says so."""
    monkeypatch.setattr(cmd_cost, "BENCH_RESULTS", tmp_path)
    assert main(["cost"]) == 0
    out = capsys.readouterr().out
    assert "bench/reference/" in out and "bench/results/" not in out
    doors = out.split("\nfront door ")[1:]  # each door's lines: its first "total AWS" is the table's figure
    printed = [float(re.search(r"^\s+total AWS\D*?([\d.]+)$", door, re.M).group(1)) for door in doors]
    table = TEXT.split("<!-- generated: cost", 1)[1]
    shown = [float(row[0]) for row in re.findall(r"^\| [^|]+ \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", table, re.M)[:3]]
    assert [round(total, 3) for total in printed] == shown


def test_a_newer_local_run_wins_over_the_reference(tmp_path: Path, monkeypatch) -> None:
    local = {"machine": {"date": "2999-01-01 00:00 UTC"}, "sections": {"forwarder": {"batch_ms_median": 999.0}}}
    (tmp_path / "bench-29990101T000000Z.json").write_text(json.dumps(local))
    monkeypatch.setattr(cmd_cost, "BENCH_RESULTS", tmp_path)
    measured, sources = cmd_cost.measured_with_sources()
    assert measured["forwarder_ms"] == 999.0
    assert sources[0].parent == tmp_path and all(path.parent.name == "reference" for path in sources[1:])
    assert measured.keys() >= cmd_cost.measured_inputs(cmd_cost.REFERENCE_RESULTS).keys()


def test_the_readme_figures_are_the_code_and_the_stack() -> None:
    """Key cache times, the sync schedule, batch size, receives before the DLQ, retention."""
    from chalicelib.runtime.config import Settings

    template = json.loads((ROOT / "infra" / "resources.json").read_text())
    app = (ROOT / "app.py").read_text()
    assert "Unknown keys are cached 10 s, known ones 60 s" in TEXT and "cached 60 s" in TEXT
    assert (Settings.key_negative_ttl, Settings.key_cache_ttl) == (10, 60)
    assert "every 5 minutes" in TEXT and '@app.schedule("rate(5 minutes)")' in app
    assert "batches of up to 100" in TEXT and '"LOOKOUT_EDGE_FORWARDER_BATCH_SIZE", "100"' in app
    overrides = json.loads((ROOT / "infra" / "chalice-overrides.json").read_text())
    assert overrides["Parameters"]["ForwarderBatchSize"]["Default"] == 100
    assert "after 10 receives" in TEXT and template["Parameters"]["MaxReceiveCount"]["Default"] == 10
    retention = template["Resources"]["EventsQueue"]["Properties"]["MessageRetentionPeriod"]
    assert "events wait 14 days" in TEXT and retention == 14 * 24 * 3600
