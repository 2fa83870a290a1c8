"""LocalNode runs hanode's own verbs as a child, on the same config and package."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hanode.nodelink import LocalNode


def test_local_node_runs_a_verb_of_this_package_on_its_config(tmp_path: Path) -> None:
    config = tmp_path / "hanode.toml"
    config.write_text('[services]\nunits = ["hanode-test-absent.service"]\n')
    node = LocalNode("here", config, ["--insecure-config"])
    reply = node.call(["status", "--json"], timeout=60)
    document = json.loads(reply.stdout)
    assert document["config"] == str(config)
    assert [r["name"] for r in document["resources"]] == ["services"]
    assert reply.node == "here" and reply.argv == ("status", "--json")
    assert reply.seconds > 0


def test_local_node_reports_the_exit_status_and_stderr_of_a_failed_verb(tmp_path: Path) -> None:
    config = tmp_path / "hanode.toml"
    config.write_text("[services\n")
    reply = LocalNode("here", config, ["--insecure-config"]).call(["check"], timeout=60)
    assert reply.exitcode == 2
    assert f"{config}:1" in reply.stderr
    assert os.path.exists(config)
