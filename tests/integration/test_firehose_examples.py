"""infra/examples/firehose-to-edge.json: cfn-lint clean, and configured as docs/firehose.md says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chalicelib.edge.doors.firehose import FIREHOSE_SIGNALS
from tests.integration.test_deploy import ROOT, cfn_lint

TEMPLATE = ROOT / "infra" / "examples" / "firehose-to-edge.json"


def destination() -> dict[str, Any]:
    template = json.loads(TEMPLATE.read_text())
    return template["Resources"]["DeliveryStream"]["Properties"]["HttpEndpointDestinationConfiguration"]


def test_the_example_template_passes_cfn_lint() -> None:
    result = cfn_lint(Path(TEMPLATE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stream_posts_gzip_to_the_edge_route_with_the_project_key_and_backs_up_failures() -> None:
    config = destination()
    assert config["EndpointConfiguration"]["Url"] == {"Fn::Sub": "https://${EdgeHost}/api/firehose/${Signal}"}
    assert config["EndpointConfiguration"]["AccessKey"] == {"Ref": "ProjectApiKey"}
    assert config["RequestConfiguration"]["ContentEncoding"] == "GZIP"
    assert config["S3BackupMode"] == "FailedDataOnly"
    parameters = json.loads(TEMPLATE.read_text())["Parameters"]
    assert parameters["BufferSizeMBs"]["MaxValue"] <= 4  # Lambda's 6 MB request limit after base64
    assert parameters["ProjectApiKey"]["NoEcho"] is True
    assert set(parameters["Signal"]["AllowedValues"]) == FIREHOSE_SIGNALS
