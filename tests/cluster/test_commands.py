"""manage.py cluster_nodes: add, list, drain, remove, lookup and their errors."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from cluster.models import Node
from cluster.selectors import current_ring

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("cluster_nodes", *args, stdout=out)
    return out.getvalue()


def test_add_prints_the_token_once_and_activates():
    out = run("add", "node-a", "--zone", "eu", "--weight", "2", "--address", "10.0.0.1:9000")
    assert "token (shown only once):" in out
    node = Node.objects.get(name="node-a")
    assert (node.state, node.zone, node.weight, node.address) == ("active", "eu", 2.0, "10.0.0.1:9000")
    token = out.strip().rsplit(" ", 1)[-1]
    assert node.token_hash and token not in node.token_hash


def test_list_lookup_drain_remove():
    run("add", "a")
    run("add", "b")
    listing = run("list")
    assert "a " in listing and "50.00%" in listing and "ring epoch 2" in listing
    out = run("lookup", "user:42", "--n", "2")
    assert f"owner: {current_ring().get_node('user:42')}" in out
    run("drain", "a")
    assert Node.objects.get(name="a").state == "draining"
    run("remove", "b")
    assert Node.objects.get(name="b").state == "left"


@pytest.mark.parametrize(
    "args, message",
    [
        (("drain", "ghost"), "no node named 'ghost'"),
        (("lookup", "k"), "the ring is empty"),
        (("add", "bad name"), "name must match"),
        (("add", "x", "--weight", "0"), "weight must be"),
    ],
)
def test_errors_exit_non_zero_with_one_line(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_illegal_transition_is_an_error():
    run("add", "a")
    run("drain", "a")
    with pytest.raises(CommandError, match="cannot go from draining to draining"):
        run("drain", "a")


@pytest.mark.django_db(transaction=True)
def test_exit_code_from_the_shell(child_env):
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "manage.py", "cluster_nodes", "drain", "nobody-here"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "CommandError: no node named 'nobody-here'"
